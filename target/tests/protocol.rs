//! iSCSI-level behaviour of the target against a raw initiator built on
//! `proto`: NOP echo, CmdSN window, Reject, digests, MC/S, reinstatement,
//! Task Management, Text/SendTargets, logout, login timeout, shutdown.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{isid, start_server, Conn};
use iscsi_target::config::SessionLimits;
use proto::pdu::{
    AsyncEvent, DigestConfig, LogoutReason, LogoutRequest, LogoutResponseCode, NopOut, Pdu,
    RejectReason, ScsiCommand, TaskAttr, TaskMgmtRequest, TextRequest, TmfFunction, TmfResponse,
    RESERVED_TAG,
};
use proto::serial::{CmdSn, DataSn, StatSn};
use tokio::io::AsyncWriteExt;

const T: &str = "iqn.2024-01.rs.iscsi:test.protocol";
const SHORT: Duration = Duration::from_millis(300);

fn nop(c: &mut Conn, itt: u32, lun: u64, data: &'static [u8], immediate: bool) -> Pdu {
    let p = Pdu::NopOut(NopOut {
        immediate,
        lun,
        itt,
        ttt: RESERVED_TAG,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        data: Bytes::from_static(data),
    });
    if !immediate {
        c.cmd_sn = c.cmd_sn.wrapping_add(1);
    }
    p
}

#[tokio::test]
async fn nop_out_is_echoed_with_itt_lun_and_data() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let mut c = Conn::login(s.local_addrs()[0], Some(T), isid(1), 0, 0)
        .await
        .unwrap();
    let lun = 0x0001_0000_0000_0000;
    let p = nop(&mut c, 0x77, lun, b"hello ping", false);
    c.send(p).await;
    let Pdu::NopIn(n) = c.recv().await.unwrap() else {
        panic!("expected NOP-In")
    };
    assert_eq!(n.itt, 0x77);
    assert_eq!(n.ttt, RESERVED_TAG);
    assert_eq!(n.lun, lun);
    assert_eq!(&n.data[..], b"hello ping");
    // The non-immediate NOP-Out used a CmdSN and freed it again.
    assert_eq!(n.exp_cmd_sn, c.cmd_sn);
    // A NOP-Out with the reserved ITT gets no answer.
    let p = nop(&mut c, RESERVED_TAG, 0, b"", true);
    c.send(p).await;
    assert!(c.recv_timeout(SHORT).await.is_none());
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn commands_outside_the_cmdsn_window_are_ignored() {
    let limits = SessionLimits {
        queue_depth: 4,
        ..SessionLimits::default()
    };
    let s = start_server(T, &["mem:1M"], limits).await;
    let mut c = Conn::login(s.local_addrs()[0], Some(T), isid(2), 0, 0)
        .await
        .unwrap();
    let max = c.max_cmd_sn;
    // CmdSN = MaxCmdSN + 1: silently ignored (RFC 7143 §4.2.2.1).
    let tur = |cmd_sn, itt| {
        Pdu::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: false,
            write: false,
            attr: TaskAttr::SIMPLE,
            lun: 0,
            itt,
            expected_data_transfer_length: 0,
            cmd_sn,
            exp_stat_sn: StatSn::new(0),
            cdb: Bytes::from_static(&[0; 6]),
            bidi_read_length: None,
            data: Bytes::new(),
        })
    };
    c.send(tur(max.wrapping_add(1), 0x1000)).await;
    assert!(
        c.recv_timeout(SHORT).await.is_none(),
        "answered out-of-window command"
    );
    // Too low (already used): ignored as well.
    c.send(tur(c.cmd_sn.wrapping_sub(1), 0x1001)).await;
    assert!(
        c.recv_timeout(SHORT).await.is_none(),
        "answered duplicate CmdSN"
    );
    // The expected CmdSN works.
    c.send(tur(c.cmd_sn, 0x1002)).await;
    let Pdu::ScsiResponse(r) = c.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(r.itt, 0x1002);
    assert_eq!(r.status, 0);
    assert_eq!(r.exp_cmd_sn, c.cmd_sn.wrapping_add(1));
    // MaxCmdSN advanced as the command completed: window of 4.
    assert_eq!(r.max_cmd_sn, r.exp_cmd_sn.wrapping_add(3));
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unknown_opcode_gets_reject_and_bad_header_digest_drops_only_that_connection() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let addr = s.local_addrs()[0];
    let mut c = Conn::login(addr, Some(T), isid(3), 0, 0).await.unwrap();
    // Opcode 0x1f is not defined: Reject "command not supported", with the
    // offending header echoed.
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1f;
    bhs[16..20].copy_from_slice(&0x4242u32.to_be_bytes());
    c.stream.write_all(&bhs).await.unwrap();
    let Pdu::Reject(r) = c.recv().await.unwrap() else {
        panic!("expected Reject")
    };
    assert_eq!(r.reason, RejectReason::COMMAND_NOT_SUPPORTED);
    assert_eq!(&r.data[..48], &bhs[..]);
    // The connection still works.
    c.clear_unit_attention().await.unwrap();

    // A second session with header digests; a corrupted header digest
    // closes that connection only.
    let mut d = Conn::login_with(addr, Some(T), isid(4), 0, 0, |cfg| {
        cfg.operational = cfg.operational.clone().with_digests_required();
    })
    .await
    .unwrap();
    assert!(d.digests.header && d.digests.data);
    d.clear_unit_attention().await.unwrap();
    let p = nop(&mut d, 9, 0, b"x", true);
    let mut enc = p.encode(DigestConfig::BOTH).to_bytes().to_vec();
    enc[50] ^= 0xff; // inside the header digest
    d.stream.write_all(&enc).await.unwrap();
    match d.recv_timeout(Duration::from_secs(3)).await {
        Some(Err(_)) => {}
        other => panic!("connection not dropped: {other:?}"),
    }
    // The first session is unaffected.
    let r = c.read10(0, 1).await.unwrap();
    assert_eq!(r.status, 0);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn data_digest_error_is_rejected() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let mut d = Conn::login_with(s.local_addrs()[0], Some(T), isid(5), 0, 0, |cfg| {
        cfg.operational = cfg.operational.clone().with_digests_required();
    })
    .await
    .unwrap();
    let p = nop(&mut d, 9, 0, b"data!", true);
    let mut enc = p.encode(DigestConfig::BOTH).to_bytes().to_vec();
    let n = enc.len();
    enc[n - 1] ^= 0x55; // the data digest
    d.stream.write_all(&enc).await.unwrap();
    let Pdu::Reject(r) = d.recv().await.unwrap() else {
        panic!("expected Reject")
    };
    assert_eq!(r.reason, RejectReason::DATA_DIGEST_ERROR);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn mcs_join_by_tsih_and_limits() {
    let limits = SessionLimits {
        max_connections: 2,
        ..SessionLimits::default()
    };
    let s = start_server(T, &["mem:1M"], limits).await;
    let addr = s.local_addrs()[0];
    let mut a = Conn::login_with(addr, Some(T), isid(6), 0, 0, |cfg| {
        cfg.operational.max_connections = 2;
    })
    .await
    .unwrap();
    a.clear_unit_attention().await.unwrap();
    let tsih = a.outcome.tsih;
    assert_ne!(tsih, 0);
    assert_eq!(a.outcome.session.max_connections, 2);
    // Second connection joins; commands share the session's CmdSN space.
    let cmd_sn = a.cmd_sn;
    let mut b = Conn::login_with(addr, Some(T), isid(6), tsih, 1, |cfg| {
        cfg.cmd_sn = cmd_sn;
    })
    .await
    .unwrap();
    assert_eq!(b.outcome.tsih, tsih);
    b.cmd_sn = a.cmd_sn;
    let w = b.write10(10, &[0xab; 512]).await.unwrap();
    assert_eq!(w.status, 0);
    a.cmd_sn = b.cmd_sn;
    let r = a.read10(10, 1).await.unwrap();
    assert_eq!(r.data, vec![0xab; 512]);
    // A third connection exceeds MaxConnections=2: "too many connections".
    let e = Conn::login_with(addr, Some(T), isid(6), tsih, 2, |cfg| cfg.cmd_sn = a.cmd_sn)
        .await
        .err()
        .expect("third connection accepted");
    assert!(e.contains("too many connections"), "{e}");
    // Joining a session that does not exist.
    let e = Conn::login_with(addr, Some(T), isid(6), tsih.wrapping_add(100), 3, |_| {})
        .await
        .err()
        .expect("bogus TSIH accepted");
    assert!(e.contains("session does not exist"), "{e}");
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn session_reinstatement_closes_the_old_session() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let addr = s.local_addrs()[0];
    let mut old = Conn::login(addr, Some(T), isid(7), 0, 0).await.unwrap();
    let mut new = Conn::login(addr, Some(T), isid(7), 0, 0).await.unwrap();
    assert_ne!(old.outcome.tsih, new.outcome.tsih);
    // The old connection is closed by the target.
    match old.recv_timeout(Duration::from_secs(3)).await {
        Some(Err(_)) => {}
        other => panic!("old session still open: {other:?}"),
    }
    assert_eq!(new.read10(0, 1).await.unwrap().status, 0);
    assert_eq!(s.shared().sessions.len(), 1);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn abort_task_never_rejected() {
    let limits = SessionLimits {
        immediate_data: false,
        initial_r2t: true,
        ..SessionLimits::default()
    };
    let s = start_server(T, &["mem:1M"], limits).await;
    let mut c = Conn::login(s.local_addrs()[0], Some(T), isid(8), 0, 0)
        .await
        .unwrap();
    // A WRITE waiting for its data (we ignore the R2T).
    let itt = c.next_itt();
    let write_cmd_sn = c.cmd_sn;
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[8] = 8;
    c.send(Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_: true,
        read: false,
        write: true,
        attr: TaskAttr::SIMPLE,
        lun: 0,
        itt,
        expected_data_transfer_length: 4096,
        cmd_sn: write_cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        cdb: Bytes::copy_from_slice(&cdb),
        bidi_read_length: None,
        data: Bytes::new(),
    }))
    .await;
    c.cmd_sn = c.cmd_sn.successor();
    let Pdu::R2t(r2t) = c.recv().await.unwrap() else {
        panic!("expected R2T")
    };
    assert_eq!(r2t.itt, itt);
    let tmf = |c: &mut Conn, f: TmfFunction, rtt: u32, ref_cmd_sn: CmdSn| {
        let itt = c.next_itt();
        (
            itt,
            Pdu::TaskMgmtRequest(TaskMgmtRequest {
                immediate: true,
                function: f,
                lun: 0,
                itt,
                referenced_task_tag: rtt,
                cmd_sn: c.cmd_sn,
                exp_stat_sn: c.exp_stat_sn,
                ref_cmd_sn,
                exp_data_sn: DataSn::new(0),
                data: Bytes::new(),
            }),
        )
    };
    let (titt, p) = tmf(&mut c, TmfFunction::ABORT_TASK, itt, write_cmd_sn);
    c.send(p).await;
    let Pdu::TaskMgmtResponse(r) = c.recv().await.unwrap() else {
        panic!("expected TMF response")
    };
    assert_eq!(r.itt, titt);
    assert_eq!(r.response, TmfResponse::FUNCTION_COMPLETE);
    // The aborted write gets no response; a late Data-Out is discarded.
    c.send(Pdu::DataOut(proto::pdu::DataOut {
        final_: true,
        lun: 0,
        itt,
        ttt: r2t.ttt,
        exp_stat_sn: c.exp_stat_sn,
        data_sn: DataSn::new(0),
        buffer_offset: 0,
        data: Bytes::from(vec![0u8; 4096]),
    }))
    .await;
    assert!(c.recv_timeout(SHORT).await.is_none());
    // Aborting a task that does not exist (completed long ago).
    let old_sn = c.cmd_sn.wrapping_sub(1);
    let (_, p) = tmf(&mut c, TmfFunction::ABORT_TASK, 0xdead, old_sn);
    c.send(p).await;
    let Pdu::TaskMgmtResponse(r) = c.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(r.response, TmfResponse::TASK_DOES_NOT_EXIST);
    // LOGICAL UNIT RESET (unit attentions are the device server's
    // business; the LU keeps working).
    let (_, p) = tmf(&mut c, TmfFunction::LOGICAL_UNIT_RESET, 0, CmdSn::new(0));
    c.send(p).await;
    let Pdu::TaskMgmtResponse(r) = c.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(r.response, TmfResponse::FUNCTION_COMPLETE);
    c.clear_unit_attention().await.unwrap();
    // ... and a LUN that does not exist.
    let itt2 = c.next_itt();
    c.send(Pdu::TaskMgmtRequest(TaskMgmtRequest {
        immediate: true,
        function: TmfFunction::LOGICAL_UNIT_RESET,
        lun: 0x0005_0000_0000_0000,
        itt: itt2,
        referenced_task_tag: RESERVED_TAG,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        ref_cmd_sn: CmdSn::new(0),
        exp_data_sn: DataSn::new(0),
        data: Bytes::new(),
    }))
    .await;
    let Pdu::TaskMgmtResponse(r) = c.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(r.response, TmfResponse::LUN_DOES_NOT_EXIST);
    // Task reassignment needs ERL 2; unknown functions are rejected.
    let (_, p) = tmf(&mut c, TmfFunction::TASK_REASSIGN, 1, CmdSn::new(0));
    c.send(p).await;
    let Pdu::TaskMgmtResponse(r) = c.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(
        r.response,
        TmfResponse::TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED
    );
    let (_, p) = tmf(&mut c, TmfFunction(99), 1, CmdSn::new(0));
    c.send(p).await;
    let Pdu::TaskMgmtResponse(r) = c.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(r.response, TmfResponse::FUNCTION_REJECTED);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn send_targets_and_logout() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let addr = s.local_addrs()[0];
    let mut d = Conn::login(addr, None, isid(9), 0, 0).await.unwrap();
    let itt = d.next_itt();
    d.send(Pdu::TextRequest(TextRequest {
        immediate: true,
        final_: true,
        continue_: false,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmd_sn: d.cmd_sn,
        exp_stat_sn: d.exp_stat_sn,
        data: Bytes::from_static(b"SendTargets=All\0"),
    }))
    .await;
    let Pdu::TextResponse(r) = d.recv().await.unwrap() else {
        panic!("expected Text Response")
    };
    assert!(r.final_);
    let text = String::from_utf8(r.data.to_vec()).unwrap();
    assert_eq!(text, format!("TargetName={T}\0TargetAddress={addr},1\0"));
    // SCSI commands are not allowed in a discovery session.
    let _ = d.command(0, &[0u8; 6], &[], 0).await;
    d.logout().await.unwrap();
    match d.recv_timeout(Duration::from_secs(2)).await {
        Some(Err(_)) => {}
        other => panic!("connection not closed after logout: {other:?}"),
    }

    // Logout of a CID that does not exist, then of the own connection.
    let mut c = Conn::login(addr, Some(T), isid(10), 0, 0).await.unwrap();
    let itt = c.next_itt();
    c.send(Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason_code: LogoutReason::CLOSE_CONNECTION,
        itt,
        cid: 42,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        data: Bytes::new(),
    }))
    .await;
    let Pdu::LogoutResponse(r) = c.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(r.response, LogoutResponseCode::CID_NOT_FOUND);
    let itt = c.next_itt();
    c.send(Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason_code: LogoutReason::REMOVE_CONNECTION_FOR_RECOVERY,
        itt,
        cid: 0,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        data: Bytes::new(),
    }))
    .await;
    let Pdu::LogoutResponse(r) = c.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(
        r.response,
        LogoutResponseCode::CONNECTION_RECOVERY_NOT_SUPPORTED
    );
    c.logout().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.shared().sessions.len(), 0);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn idle_login_times_out() {
    let limits = SessionLimits {
        login_timeout: Duration::from_millis(300),
        ..SessionLimits::default()
    };
    let s = start_server(T, &["mem:1M"], limits).await;
    let mut sock = tokio::net::TcpStream::connect(s.local_addrs()[0])
        .await
        .unwrap();
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut sock, &mut b),
    )
    .await
    .expect("login timeout did not close the connection");
    assert!(matches!(r, Ok(0) | Err(_)));
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn shutdown_asks_for_logout() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let mut c = Conn::login(s.local_addrs()[0], Some(T), isid(11), 0, 0)
        .await
        .unwrap();
    let h = tokio::spawn(async move { s.shutdown_with_grace(Duration::from_secs(2)).await });
    let Pdu::AsyncMessage(m) = c.recv().await.unwrap() else {
        panic!("expected Async Message")
    };
    assert_eq!(m.async_event, AsyncEvent::LOGOUT_REQUEST);
    c.logout().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), h)
        .await
        .expect("shutdown did not finish after the logout")
        .unwrap();
}

#[tokio::test]
async fn long_text_response_is_continued() {
    use iscsi_target::config::{AuthConfig, PortalGroup, ServerConfig, TargetConfig};
    // 24 portals: the SendTargets answer is longer than the 512 bytes the
    // initiator accepts per PDU, so it comes in C-bit pieces.
    let portals: Vec<std::net::SocketAddr> = (1..=24)
        .map(|i| format!("127.0.0.{i}:0").parse().unwrap())
        .collect();
    let cfg = ServerConfig {
        targets: vec![TargetConfig {
            name: T.into(),
            alias: None,
            portal_groups: vec![PortalGroup { tpgt: 3, portals }],
            luns: vec![],
            auth: AuthConfig::default(),
            allow: vec![],
            initiators: Default::default(),
            limits: SessionLimits::default(),
        }],
        discovery_auth: AuthConfig::default(),
        limits: Default::default(),
    };
    let s = iscsi_target::server::Server::start(cfg).await.unwrap();
    assert_eq!(s.local_addrs().len(), 24);
    let mut d = Conn::login_with(s.local_addrs()[0], None, isid(12), 0, 0, |cfg| {
        cfg.operational.max_recv_data_segment_length = 512;
    })
    .await
    .unwrap();
    let itt = d.next_itt();
    let mut ttt = RESERVED_TAG;
    let mut text = Vec::new();
    let mut pieces = 0;
    loop {
        d.send(Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            continue_: false,
            lun: 0,
            itt,
            ttt,
            cmd_sn: d.cmd_sn,
            exp_stat_sn: d.exp_stat_sn,
            data: if ttt == RESERVED_TAG {
                Bytes::from_static(b"SendTargets=All\0")
            } else {
                Bytes::new()
            },
        }))
        .await;
        let Pdu::TextResponse(r) = d.recv().await.unwrap() else {
            panic!("expected Text Response")
        };
        assert!(r.data.len() <= 512);
        assert!(!(r.final_ && r.continue_), "F and C both set");
        text.extend_from_slice(&r.data);
        pieces += 1;
        if r.final_ {
            assert_eq!(r.ttt, RESERVED_TAG);
            break;
        }
        assert!(r.continue_);
        assert_ne!(r.ttt, RESERVED_TAG);
        ttt = r.ttt;
    }
    assert!(pieces > 1);
    let text = String::from_utf8(text).unwrap();
    for a in s.local_addrs() {
        assert!(
            text.contains(&format!("TargetAddress={a},3\0")),
            "{a} missing"
        );
    }
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn connection_reinstatement_replaces_the_same_cid() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let addr = s.local_addrs()[0];
    let mut a = Conn::login_with(addr, Some(T), isid(13), 0, 5, |cfg| {
        cfg.operational.max_connections = 2;
    })
    .await
    .unwrap();
    a.clear_unit_attention().await.unwrap();
    let tsih = a.outcome.tsih;
    let cmd_sn = a.cmd_sn;
    // Same TSIH and CID: the old connection is replaced.
    let mut b = Conn::login_with(addr, Some(T), isid(13), tsih, 5, |cfg| cfg.cmd_sn = cmd_sn)
        .await
        .unwrap();
    match a.recv_timeout(Duration::from_secs(3)).await {
        Some(Err(_)) => {}
        other => panic!("replaced connection still open: {other:?}"),
    }
    b.cmd_sn = cmd_sn;
    assert_eq!(b.read10(0, 1).await.unwrap().status, 0);
    let sess = s.shared().sessions.get(tsih).expect("session survives");
    assert_eq!(sess.core.connection_count(), 1);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn nop_in_pings_and_timeout() {
    let limits = SessionLimits {
        nop_interval: Some(Duration::from_millis(150)),
        nop_timeout: Duration::from_millis(300),
        ..SessionLimits::default()
    };
    let s = start_server(T, &["mem:1M"], limits).await;
    let addr = s.local_addrs()[0];
    // An initiator that answers pings stays connected.
    let mut c = Conn::login(addr, Some(T), isid(14), 0, 0).await.unwrap();
    for _ in 0..3 {
        let Pdu::NopIn(n) = c.recv().await.unwrap() else {
            panic!("expected a ping")
        };
        assert_eq!(n.itt, RESERVED_TAG);
        assert_ne!(n.ttt, RESERVED_TAG);
        // RFC 7143 §11.18: echo the TTT and the LUN, reserved ITT.
        c.send(Pdu::NopOut(NopOut {
            immediate: true,
            lun: n.lun,
            itt: RESERVED_TAG,
            ttt: n.ttt,
            cmd_sn: c.cmd_sn,
            exp_stat_sn: c.exp_stat_sn,
            data: Bytes::new(),
        }))
        .await;
    }
    assert_eq!(c.read10(0, 1).await.unwrap().status, 0);
    // One that ignores them is dropped after the timeout.
    let mut q = Conn::login(addr, Some(T), isid(15), 0, 0).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::time::timeout_at(deadline, q.recv()).await {
            Ok(Ok(Pdu::NopIn(_))) => continue,
            Ok(Err(_)) => break,
            Ok(Ok(other)) => panic!("unexpected {:?}", other.opcode()),
            Err(_) => panic!("silent initiator not dropped"),
        }
    }
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}
