//! Protocol-level tests against a scripted fake target (testbed's
//! `FakeTarget`: real TCP, `proto`'s target login and codec). They cover
//! what real targets rarely do on demand: target NOP-In pings, Async
//! Messages, silence on one command (ABORT TASK), LUN reset, a closed
//! CmdSN window, burst limits, malformed or out-of-sequence PDUs, and
//! data digest Rejects and CRC errors (retried, RFC 7143 §7.3, §7.8).

use std::time::{Duration, Instant};

use bytes::Bytes;
use initiator::{
    DataDirection, Error, Portal, ProtocolError, RawResult, Session, SessionConfig, SessionEvent,
    TimedOut,
};
use proto::pdu::{
    AsyncEvent, DataIn, DataOut, DigestConfig, LogoutReason, Pdu, Reject, RejectReason,
    ScsiCommand, ScsiResponse, TmfFunction, TmfResponse,
};
use proto::scsi::cdb;
use proto::scsi::lun::Lun;
use proto::scsi::sense::{Asc, Sense, SenseKey};
use proto::serial::{DataSn, R2tSn, SerialNumber, StatSn};
use proto::session::initiator::CommandError;
use proto::session::DataInError;
use testbed::fake_target::{FakeConn, FakeTarget, FakeTargetConfig, RESERVED_TAG};
use tokio::sync::broadcast;

const TARGET: &str = "iqn.2026-01.rs.iscsi-rs:fake";
const INITIATOR: &str = "iqn.2026-01.rs.iscsi-rs:fake-tests";
const TUR: [u8; 6] = [0; 6];

fn config(t: &FakeTarget) -> SessionConfig {
    let portal = Portal::parse(&t.addr().to_string()).expect("portal");
    let mut c = SessionConfig::new(portal, TARGET, INITIATOR);
    c.connect_timeout = Duration::from_secs(2);
    c.login_timeout = Duration::from_secs(2);
    // Quiet by default; tests that need pings or timeouts shorten these.
    c.nop_interval = Duration::from_secs(60);
    c.nop_timeout = Duration::from_secs(60);
    c.command_timeout = Duration::from_secs(20);
    c.recovery_timeout = Duration::from_secs(5);
    c
}

async fn open(
    tcfg: FakeTargetConfig,
    f: impl FnOnce(&mut SessionConfig),
) -> (FakeTarget, Session, FakeConn) {
    let mut t = FakeTarget::start(tcfg).await.expect("fake target");
    let mut c = config(&t);
    f(&mut c);
    let s = Session::connect(c).await.expect("login to the fake target");
    let conn = t.accept().await.expect("logged-in connection");
    (t, s, conn)
}

fn lun(n: u16) -> u64 {
    Lun::from_number(n).to_u64()
}

fn disk() -> Vec<u8> {
    (0..64 * 1024u32)
        .map(|i| (i * 31 + i / 512) as u8)
        .collect()
}

/// Issue a command in the background.
fn spawn_cmd(
    s: &Session,
    cdb: Vec<u8>,
    dir: DataDirection,
) -> tokio::task::JoinHandle<initiator::Result<RawResult>> {
    let s = s.clone();
    tokio::spawn(async move { s.execute_raw(lun(0), &cdb, dir).await })
}

fn read_cmd(lba: u64, blocks: u32) -> (Vec<u8>, DataDirection) {
    (
        cdb::read16(lba, blocks, false).as_bytes().to_vec(),
        DataDirection::Read(blocks * 512),
    )
}

async fn wait_event(
    rx: &mut broadcast::Receiver<SessionEvent>,
    what: &str,
    mut pred: impl FnMut(&SessionEvent) -> bool,
) -> SessionEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return e,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event channel closed waiting for {what}: {e}"),
            Err(_) => panic!("no {what} event within 5 s"),
        }
    }
}

async fn join<T>(h: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .expect("command did not finish")
        .expect("task panicked")
}

#[tokio::test]
async fn target_nop_in_is_answered_with_its_ttt_and_lun() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let stat_sn = c.stat_sn;
    // RFC 7143 §11.19: an unsolicited NOP-In (ITT 0xffffffff) with a valid
    // TTT asks for a ping response; its StatSN is not advanced.
    let nop = c.nop_in(
        RESERVED_TAG,
        0x1234,
        lun(5),
        Bytes::from_static(b"ping!"),
        false,
    );
    c.send(nop).await.unwrap();
    let Pdu::NopOut(out) = c.recv().await.unwrap() else {
        panic!("expected a NOP-Out")
    };
    assert_eq!(out.itt, RESERVED_TAG);
    assert_eq!(out.ttt, 0x1234);
    assert_eq!(out.lun, lun(5));
    assert!(out.immediate);
    assert_eq!(&out.data[..], b"ping!");
    // ExpStatSN must not acknowledge a StatSN that was not consumed.
    assert_eq!(out.exp_stat_sn, stat_sn);
    // Commands still flow, with the same ExpStatSN.
    let h = spawn_cmd(&s, TUR.to_vec(), DataDirection::None);
    let cmd = c.recv_command().await.unwrap();
    assert_eq!(cmd.exp_stat_sn, stat_sn);
    c.complete_good(cmd.itt).await.unwrap();
    assert_eq!(join(h).await.unwrap().status, 0);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[tokio::test]
async fn idle_connection_is_pinged_and_a_lost_ping_recovers_the_session() {
    let (mut t, s, mut c) = open(FakeTargetConfig::default(), |c| {
        c.nop_interval = Duration::from_millis(200);
        c.nop_timeout = Duration::from_millis(600);
    })
    .await;
    let mut ev = s.events();
    c.auto_ping = false;
    let Pdu::NopOut(ping) = c.recv().await.unwrap() else {
        panic!("expected a NOP-Out ping")
    };
    // RFC 7143 §11.18: a ping has a valid ITT, TTT 0xffffffff, and is immediate.
    assert_ne!(ping.itt, RESERVED_TAG);
    assert_eq!(ping.ttt, RESERVED_TAG);
    assert!(ping.immediate);
    let reply = c.nop_in(ping.itt, RESERVED_TAG, ping.lun, ping.data.clone(), true);
    c.send(reply).await.unwrap();
    // The next ping goes unanswered: the session recovers on a new connection.
    let Pdu::NopOut(second) = c.recv().await.unwrap() else {
        panic!("expected a second ping")
    };
    assert_ne!(second.itt, ping.itt);
    wait_event(&mut ev, "Recovering", |e| {
        matches!(e, SessionEvent::Recovering(_))
    })
    .await;
    let c2 = t.accept().await.expect("reconnect");
    assert_eq!(
        c2.outcome().isid.0,
        s.isid(),
        "same ISID: session reinstatement"
    );
    wait_event(&mut ev, "Recovered", |e| {
        matches!(e, SessionEvent::Recovered { .. })
    })
    .await;
}

#[tokio::test]
async fn logout_request_drains_logs_out_and_reconnects() {
    let (mut t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let mut ev = s.events();
    let mut d = disk();
    let (cdb1, dir1) = read_cmd(0, 4);
    let first = spawn_cmd(&s, cdb1, dir1);
    let cmd1 = c.recv_command().await.unwrap();
    // Async event 1 with Parameter3 = 2 s to log out.
    let m = c.async_message(AsyncEvent::LOGOUT_REQUEST, 0, [0, 0, 2], Bytes::new());
    c.send(m).await.unwrap();
    wait_event(&mut ev, "LogoutRequested", |e| {
        matches!(e, SessionEvent::LogoutRequested)
    })
    .await;
    // A command submitted now waits for the new session.
    let (cdb2, dir2) = read_cmd(8, 2);
    let second = spawn_cmd(&s, cdb2, dir2);
    // The in-flight command is allowed to finish first.
    c.serve_io(&cmd1, &mut d).await.unwrap();
    let r1 = join(first).await.unwrap();
    assert_eq!(&r1.data[..], &d[..4 * 512]);
    let Pdu::LogoutRequest(lo) = c.recv().await.unwrap() else {
        panic!("expected a Logout Request")
    };
    assert_eq!(lo.reason_code, LogoutReason::CLOSE_SESSION);
    let resp = c.logout_response(lo.itt);
    c.send(resp).await.unwrap();
    c.close().await;
    let mut c2 = t.accept().await.expect("new session after logout");
    assert_eq!(c2.outcome().isid.0, s.isid());
    let cmd2 = c2.recv_command().await.unwrap();
    c2.serve_io(&cmd2, &mut d).await.unwrap();
    let r2 = join(second).await.unwrap();
    assert_eq!(&r2.data[..], &d[8 * 512..10 * 512]);
    wait_event(&mut ev, "Recovered", |e| {
        matches!(e, SessionEvent::Recovered { .. })
    })
    .await;
}

#[tokio::test]
async fn lun_change_async_event_and_unit_attention_report_luns_changed() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let mut ev = s.events();
    let sense = Sense::unit_attention(Asc::REPORTED_LUNS_DATA_HAS_CHANGED).encode(false);
    // RFC 7143 §11.9.4: SCSI async event, data = SenseLength + sense data.
    let m = c.async_message(
        AsyncEvent::SCSI_ASYNC_EVENT,
        lun(0),
        [0, 0, 0],
        ScsiResponse::sense_segment(&sense),
    );
    c.send(m).await.unwrap();
    wait_event(&mut ev, "LunsChanged", |e| {
        matches!(e, SessionEvent::LunsChanged)
    })
    .await;

    // The same condition as a UNIT ATTENTION: execute() reports and retries.
    let s2 = s.clone();
    let h = tokio::spawn(async move { s2.execute(lun(0), &TUR, DataDirection::None).await });
    let cmd = c.recv_command().await.unwrap();
    let r = c.response(
        cmd.itt,
        proto::scsi::Status::CHECK_CONDITION.0,
        &sense,
        None,
    );
    c.send(r).await.unwrap();
    let retry = c.recv_command().await.unwrap();
    assert_eq!(&retry.cdb[..6], &TUR);
    c.complete_good(retry.itt).await.unwrap();
    join(h).await.expect("retried after the unit attention");
    wait_event(&mut ev, "LunsChanged", |e| {
        matches!(e, SessionEvent::LunsChanged)
    })
    .await;
}

#[tokio::test]
async fn silent_command_is_aborted_after_the_command_timeout() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |c| {
        c.command_timeout = Duration::from_millis(300);
    })
    .await;
    let started = Instant::now();
    let (rcdb, rdir) = read_cmd(0, 1);
    let h = spawn_cmd(&s, rcdb, rdir);
    let cmd = c.recv_command().await.unwrap();
    // Stay silent; the initiator sends ABORT TASK (RFC 7143 §11.5.1).
    let Pdu::TaskMgmtRequest(tmf) = c.recv().await.unwrap() else {
        panic!("expected ABORT TASK")
    };
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(tmf.function, TmfFunction::ABORT_TASK);
    assert_eq!(tmf.referenced_task_tag, cmd.itt);
    assert_eq!(tmf.ref_cmd_sn, cmd.cmd_sn);
    assert_eq!(tmf.lun, cmd.lun);
    assert!(tmf.immediate);
    let r = c.tmf_response(tmf.itt, TmfResponse::FUNCTION_COMPLETE);
    c.send(r).await.unwrap();
    match join(h).await {
        Err(Error::Timeout(TimedOut::Command(CommandError::TimedOut { abort, .. }))) => {
            assert_eq!(abort, Ok(TmfResponse::FUNCTION_COMPLETE));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The session is still usable on the same connection.
    let h = spawn_cmd(&s, TUR.to_vec(), DataDirection::None);
    let cmd = c.recv_command().await.unwrap();
    c.complete_good(cmd.itt).await.unwrap();
    join(h).await.unwrap();
}

#[tokio::test]
async fn lun_reset_sends_the_tmf_and_reports_its_response() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    // A read to LUN 3 that the reset aborts (the target never answers it)
    // and one to LUN 0 that the reset does not touch.
    let s3 = s.clone();
    let (rcdb, rdir) = read_cmd(0, 1);
    let mut on_lun3 = Some(tokio::spawn(async move {
        s3.execute_raw(lun(3), &rcdb, rdir).await
    }));
    let victim = c.recv_command().await.unwrap();
    assert_eq!(victim.lun, lun(3));
    let other = spawn_cmd(&s, TUR.to_vec(), DataDirection::None);
    let survivor = c.recv_command().await.unwrap();
    for (answer, ok) in [
        (TmfResponse::FUNCTION_REJECTED, false),
        (TmfResponse::FUNCTION_COMPLETE, true),
    ] {
        let s2 = s.clone();
        let h = tokio::spawn(async move { s2.lun_reset(lun(3)).await });
        let Pdu::TaskMgmtRequest(tmf) = c.recv().await.unwrap() else {
            panic!("expected LOGICAL UNIT RESET")
        };
        assert_eq!(tmf.function, TmfFunction::LOGICAL_UNIT_RESET);
        assert_eq!(tmf.lun, lun(3));
        assert_eq!(tmf.referenced_task_tag, RESERVED_TAG);
        let r = c.tmf_response(tmf.itt, answer);
        c.send(r).await.unwrap();
        match join(h).await {
            Ok(()) => assert!(ok),
            Err(Error::TaskManagement(_)) => assert!(!ok),
            Err(e) => panic!("unexpected error {e}"),
        }
        if ok {
            match join(on_lun3.take().expect("once")).await {
                Err(Error::TaskManagement(why)) => assert!(why.contains("RESET"), "{why}"),
                other => panic!("expected the reset to end the LUN 3 read, got {other:?}"),
            }
        } else {
            // A refused reset aborted nothing.
            assert!(!on_lun3.as_ref().is_some_and(|h| h.is_finished()));
        }
    }
    c.complete_good(survivor.itt).await.unwrap();
    join(other).await.expect("LUN 0 command unaffected");
}

/// A 48-byte BHS with this opcode and DataSegmentLength.
fn raw_bhs(opcode: u8, dsl: u32, itt: u32) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    b[0] = opcode;
    b[1] = 0x80;
    b[5..8].copy_from_slice(&dsl.to_be_bytes()[1..]);
    b[16..20].copy_from_slice(&itt.to_be_bytes());
    b
}

/// A malformed PDU fails the connection (never a panic); the session is
/// reinstated and the command re-issued, so the caller sees only a delay.
async fn malformed_pdu_is_survived(bad: impl Fn(&ScsiCommand) -> Vec<u8>) {
    let (mut t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let mut d = disk();
    let (rcdb, rdir) = read_cmd(16, 8);
    let h = spawn_cmd(&s, rcdb, rdir);
    let cmd = c.recv_command().await.unwrap();
    c.send_raw(&bad(&cmd)).await.unwrap();
    let mut c2 = t.accept().await.expect("recovery reconnects");
    let again = c2.recv_command().await.unwrap();
    assert_eq!(again.cdb, cmd.cdb, "the same command is re-issued");
    c2.serve_io(&again, &mut d).await.unwrap();
    let r = join(h).await.expect("the command survives the bad PDU");
    assert_eq!(&r.data[..], &d[16 * 512..24 * 512]);
    drop(c);
}

#[tokio::test]
async fn unknown_opcode_recovers() {
    malformed_pdu_is_survived(|cmd| raw_bhs(0x3a, 0, cmd.itt)).await;
}

#[tokio::test]
async fn oversized_data_segment_recovers_without_allocating() {
    // Data-In header announcing 16 MiB - 1 (far above our 256 KiB
    // MaxRecvDataSegmentLength); the data never comes.
    malformed_pdu_is_survived(|cmd| raw_bhs(0x25, 0x00ff_ffff, cmd.itt)).await;
}

#[tokio::test]
async fn data_sn_gap_recovers() {
    malformed_pdu_is_survived(|cmd| {
        let mk = |data_sn: u32, off: u32| DataIn {
            final_: false,
            ack: false,
            overflow: false,
            underflow: false,
            status: None,
            lun: cmd.lun,
            itt: cmd.itt,
            ttt: RESERVED_TAG,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: cmd.cmd_sn.wrapping_add(1),
            max_cmd_sn: cmd.cmd_sn.wrapping_add(32),
            data_sn: DataSn::new(data_sn),
            buffer_offset: off,
            residual_count: 0,
            data: Bytes::from(vec![0xee; 512]),
        };
        let mut out = Vec::new();
        for p in [mk(0, 0), mk(2, 512)] {
            out.extend_from_slice(&Pdu::DataIn(p).encode(Default::default()).to_bytes());
        }
        out
    })
    .await;
}

#[tokio::test]
async fn status_without_final_bit_recovers() {
    malformed_pdu_is_survived(|cmd| {
        let p = DataIn {
            final_: false,
            ack: false,
            overflow: false,
            underflow: false,
            status: Some(0),
            lun: cmd.lun,
            itt: cmd.itt,
            ttt: RESERVED_TAG,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: cmd.cmd_sn.wrapping_add(1),
            max_cmd_sn: cmd.cmd_sn.wrapping_add(32),
            data_sn: DataSn::new(0),
            buffer_offset: 0,
            residual_count: 0,
            data: Bytes::from(vec![0xee; 4096]),
        };
        Pdu::DataIn(p)
            .encode(Default::default())
            .to_bytes()
            .to_vec()
    })
    .await;
}

#[tokio::test]
async fn data_in_beyond_the_buffer_fails_only_that_command() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let (rcdb, rdir) = read_cmd(0, 1);
    let h = spawn_cmd(&s, rcdb, rdir);
    let cmd = c.recv_command().await.unwrap();
    let mut pdus = c.data_in(&cmd, &[7u8; 512]);
    let Pdu::DataIn(d) = &mut pdus[0] else {
        panic!("a read with data is answered with Data-In")
    };
    d.buffer_offset = 4096;
    c.send(pdus.remove(0)).await.unwrap();
    match join(h).await {
        Err(Error::Protocol(ProtocolError::Command(CommandError::DataIn {
            source: DataInError::BeyondExpected { offset: 4096, .. },
            ..
        }))) => {}
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // Same connection, still in service.
    let h = spawn_cmd(&s, TUR.to_vec(), DataDirection::None);
    let cmd = c.recv_command().await.unwrap();
    c.complete_good(cmd.itt).await.unwrap();
    join(h).await.unwrap();
}

#[tokio::test]
async fn read_residuals_and_sense_are_reported() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    // Underflow: 1 KiB of a 4 KiB read, U bit and residual in the last Data-In.
    let (rcdb, rdir) = read_cmd(0, 8);
    let h = spawn_cmd(&s, rcdb, rdir);
    let cmd = c.recv_command().await.unwrap();
    c.complete_read(&cmd, &[9u8; 1024]).await.unwrap();
    let r = join(h).await.unwrap();
    assert_eq!(r.data.len(), 1024);
    assert_eq!(r.underflow, Some(3072));
    assert_eq!(r.overflow, None);
    // CHECK CONDITION with sense in the SCSI Response.
    let (rcdb, rdir) = read_cmd(0, 1);
    let h = spawn_cmd(&s, rcdb, rdir);
    let cmd = c.recv_command().await.unwrap();
    let sense = Sense::illegal_request(Asc::LBA_OUT_OF_RANGE).encode(false);
    let r = c.response(
        cmd.itt,
        proto::scsi::Status::CHECK_CONDITION.0,
        &sense,
        None,
    );
    c.send(r).await.unwrap();
    let r = join(h).await.unwrap();
    assert_eq!(r.status, 2);
    let got = r.sense.expect("parsed sense");
    assert_eq!(got.key, SenseKey::ILLEGAL_REQUEST);
    assert_eq!(got.asc, Asc::LBA_OUT_OF_RANGE);
}

#[tokio::test]
async fn writes_respect_burst_lengths_and_the_targets_segment_size() {
    use proto::login::OperationalConfig;
    // (InitialR2T, ImmediateData) combinations; small limits so a 100 KiB
    // write needs immediate data, unsolicited Data-Out and several R2Ts.
    for (initial_r2t, immediate) in [(false, true), (true, true), (false, false), (true, false)] {
        let op = OperationalConfig {
            max_connections: 1,
            initial_r2t,
            immediate_data: immediate,
            max_recv_data_segment_length: 8192,
            first_burst_length: 16384,
            max_burst_length: 32768,
            ..OperationalConfig::default()
        };
        let tcfg = FakeTargetConfig {
            operational: op,
            ..FakeTargetConfig::default()
        };
        let (_t, s, mut c) = open(tcfg, |_| {}).await;
        let n = s.negotiated();
        assert_eq!((n.initial_r2t, n.immediate_data), (initial_r2t, immediate));
        let payload: Vec<u8> = (0..200 * 512u32).map(|i| (i % 251) as u8).collect();
        let h = spawn_cmd(
            &s,
            cdb::write16(0, 200, false).as_bytes().to_vec(),
            DataDirection::Write(Bytes::from(payload.clone())),
        );
        let cmd = c.recv_command().await.unwrap();
        // Immediate data: at most FirstBurstLength and the target's MRDSL.
        assert!(cmd.data.len() <= 8192, "{}", cmd.data.len());
        assert_eq!(cmd.data.is_empty(), !immediate);
        // F=1 unless unsolicited Data-Out follows (InitialR2T=No).
        assert_eq!(cmd.final_, initial_r2t);
        let (got, r2ts) = c.receive_write(&cmd).await.expect("well-formed write");
        assert_eq!(got, payload);
        // After the first burst, the rest comes in MaxBurstLength R2Ts.
        let solicited = payload.len() - if initial_r2t { cmd.data.len() } else { 16384 };
        assert_eq!(
            r2ts as usize,
            solicited.div_ceil(32768),
            "({initial_r2t}, {immediate})"
        );
        c.complete_good(cmd.itt).await.unwrap();
        join(h).await.unwrap();
        assert!(c.violations.is_empty(), "{:?}", c.violations);
    }
}

#[tokio::test]
async fn bad_r2t_sequence_recovers() {
    let tcfg = FakeTargetConfig {
        operational: proto::login::OperationalConfig {
            max_connections: 1,
            initial_r2t: true,
            immediate_data: false,
            ..Default::default()
        },
        ..FakeTargetConfig::default()
    };
    let (mut t, s, mut c) = open(tcfg, |_| {}).await;
    let payload = Bytes::from(vec![0x42u8; 4096]);
    let h = spawn_cmd(
        &s,
        cdb::write16(0, 8, false).as_bytes().to_vec(),
        DataDirection::Write(payload.clone()),
    );
    let cmd = c.recv_command().await.unwrap();
    // R2TSN 5 where 0 is due: a sequence error (RFC 7143 §7.9).
    let r2t = proto::pdu::R2t {
        lun: cmd.lun,
        itt: cmd.itt,
        ttt: 7,
        stat_sn: c.stat_sn,
        exp_cmd_sn: c.exp_cmd_sn,
        max_cmd_sn: c.max_cmd_sn,
        r2t_sn: R2tSn::new(5),
        buffer_offset: 0,
        desired_data_transfer_length: 4096,
        data: Bytes::new(),
    };
    c.send(r2t).await.unwrap();
    let mut c2 = t.accept().await.expect("recovery");
    let again = c2.recv_command().await.unwrap();
    let (got, r2ts) = c2.receive_write(&again).await.unwrap();
    assert_eq!(&got[..], &payload[..]);
    assert_eq!(r2ts, 1);
    c2.complete_good(again.itt).await.unwrap();
    join(h).await.unwrap();
}

#[tokio::test]
async fn cmd_sn_window_is_respected_and_a_closed_window_is_bounded() {
    let tcfg = FakeTargetConfig {
        cmd_window: 1,
        ..FakeTargetConfig::default()
    };
    let (_t, s, mut c) = open(tcfg, |c| c.command_timeout = Duration::from_millis(400)).await;
    // Four commands at once through a window of one: one at a time.
    let hs: Vec<_> = (0..4)
        .map(|_| spawn_cmd(&s, TUR.to_vec(), DataDirection::None))
        .collect();
    for _ in 0..4 {
        let cmd = c.recv_command().await.unwrap();
        c.complete_good(cmd.itt).await.unwrap();
    }
    for h in hs {
        join(h).await.unwrap();
    }
    assert!(c.violations.is_empty(), "{:?}", c.violations);

    // Close the window (MaxCmdSN = ExpCmdSN - 1) with the next response.
    let h = spawn_cmd(&s, TUR.to_vec(), DataDirection::None);
    let cmd = c.recv_command().await.unwrap();
    c.window = None;
    c.max_cmd_sn = c.exp_cmd_sn.wrapping_sub(1);
    c.complete_good(cmd.itt).await.unwrap();
    join(h).await.unwrap();
    // A queued command is bounded by the command timeout.
    let started = Instant::now();
    match join(spawn_cmd(&s, TUR.to_vec(), DataDirection::None)).await {
        Err(Error::Timeout(TimedOut::Command(CommandError::WindowClosed { .. }))) => {}
        other => panic!("expected a window timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Opening the window with a NOP-In lets the next command through.
    let h = spawn_cmd(&s, TUR.to_vec(), DataDirection::None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.max_cmd_sn = c.exp_cmd_sn.wrapping_add(3);
    let nop = c.nop_in(RESERVED_TAG, RESERVED_TAG, 0, Bytes::new(), false);
    c.send(nop).await.unwrap();
    let cmd = c.recv_command().await.unwrap();
    c.complete_good(cmd.itt).await.unwrap();
    join(h).await.unwrap();
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

/// A Reject of `pdu` (its header in the data segment, RFC 7143 §11.17).
fn reject_of(c: &mut FakeConn, pdu: Pdu, reason: RejectReason) -> Reject {
    Reject {
        reason,
        stat_sn: c.take_stat_sn(),
        exp_cmd_sn: c.exp_cmd_sn,
        max_cmd_sn: c.max_cmd_sn,
        data_sn_or_r2t_sn: SerialNumber::new(0),
        data: pdu.encode(DigestConfig::NONE).header,
    }
}

fn write_cmd(lba: u64, data: &[u8]) -> (Vec<u8>, DataDirection) {
    (
        cdb::write16(lba, (data.len() / 512) as u32, false)
            .as_bytes()
            .to_vec(),
        DataDirection::Write(Bytes::copy_from_slice(data)),
    )
}

fn crc_error_sense() -> Vec<u8> {
    Sense::new(SenseKey::ABORTED_COMMAND, Asc::PROTOCOL_SERVICE_CRC_ERROR).encode(false)
}

#[tokio::test]
async fn command_rejected_for_its_data_digest_is_sent_again_unchanged() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let data = [0x5au8; 512];
    let (wcdb, wdir) = write_cmd(3, &data);
    let h = spawn_cmd(&s, wcdb, wdir);
    let first = c.recv_command().await.unwrap();
    assert_eq!(&first.data[..], &data[..], "all of it as immediate data");
    // RFC 7143 §7.3: the target discards the command, its CmdSN is a gap.
    c.exp_cmd_sn = first.cmd_sn;
    let r = reject_of(
        &mut c,
        Pdu::ScsiCommand(first.clone()),
        RejectReason::DATA_DIGEST_ERROR,
    );
    c.send(r).await.unwrap();
    // §7.2.1: the same command again, same ITT, CmdSN and data.
    let again = c.recv_command().await.unwrap();
    assert_eq!(
        again,
        ScsiCommand {
            exp_stat_sn: again.exp_stat_sn,
            ..first
        }
    );
    c.complete_good(again.itt).await.unwrap();
    assert_eq!(join(h).await.unwrap().status, 0);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[tokio::test]
async fn data_out_reject_waits_for_the_crc_error_and_the_write_is_issued_anew() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let data = [0xc3u8; 512];
    let (wcdb, wdir) = write_cmd(9, &data);
    let h = spawn_cmd(&s, wcdb, wdir);
    let first = c.recv_command().await.unwrap();
    // A Reject of a Data-Out of the task does not end it (§7.3) ...
    let d = Pdu::DataOut(DataOut {
        final_: true,
        lun: first.lun,
        itt: first.itt,
        ttt: RESERVED_TAG,
        exp_stat_sn: StatSn::new(0),
        data_sn: DataSn::new(0),
        buffer_offset: 0,
        data: Bytes::from_static(b"x"),
    });
    let r = reject_of(&mut c, d, RejectReason::DATA_DIGEST_ERROR);
    c.send(r).await.unwrap();
    assert!(!h.is_finished());
    // ... its CHECK CONDITION, PROTOCOL SERVICE CRC ERROR does (§7.8), and
    // the initiator issues the write again as a new command.
    let r = c.response(first.itt, 2, &crc_error_sense(), None);
    c.send(r).await.unwrap();
    let again = c.recv_command().await.unwrap();
    assert_eq!(again.cmd_sn, first.cmd_sn.wrapping_add(1), "a new command");
    assert_eq!((&again.cdb, &again.data), (&first.cdb, &first.data));
    c.complete_good(again.itt).await.unwrap();
    let r = join(h).await.unwrap();
    assert_eq!(r.status, 0, "the caller sees the write succeed");
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

#[tokio::test]
async fn crc_error_retries_are_bounded() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let (wcdb, wdir) = write_cmd(1, &[1u8; 512]);
    let h = spawn_cmd(&s, wcdb, wdir);
    for _ in 0..=proto::session::reject::MAX_CRC_RETRIES {
        let cmd = c.recv_command().await.unwrap();
        let r = c.response(cmd.itt, 2, &crc_error_sense(), None);
        c.send(r).await.unwrap();
    }
    let r = join(h).await.unwrap();
    assert_eq!(r.status, 2, "the last CHECK CONDITION is reported");
    let sense = r.sense.expect("sense");
    assert_eq!(sense.asc, Asc::PROTOCOL_SERVICE_CRC_ERROR);
    let extra = tokio::time::timeout(Duration::from_millis(300), c.recv_raw()).await;
    assert!(extra.is_err(), "no fifth attempt: {extra:?}");
}

#[tokio::test]
async fn a_command_rejected_again_and_again_recovers_the_session() {
    let (mut t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let mut ev = s.events();
    let data = [0x77u8; 512];
    let (wcdb, wdir) = write_cmd(5, &data);
    let h = spawn_cmd(&s, wcdb, wdir);
    for _ in 0..=proto::session::reject::MAX_CRC_RETRIES {
        let cmd = c.recv_command().await.unwrap();
        c.exp_cmd_sn = cmd.cmd_sn;
        let r = reject_of(
            &mut c,
            Pdu::ScsiCommand(cmd),
            RejectReason::DATA_DIGEST_ERROR,
        );
        c.send(r).await.unwrap();
    }
    // The gap cannot be plugged: session recovery clears it and the write
    // goes out on the new connection.
    wait_event(&mut ev, "Recovering", |e| {
        matches!(e, SessionEvent::Recovering(_))
    })
    .await;
    let mut c2 = t.accept().await.expect("reconnect");
    let cmd = c2.recv_command().await.unwrap();
    assert_eq!(&cmd.data[..], &data[..]);
    c2.complete_good(cmd.itt).await.unwrap();
    assert_eq!(join(h).await.unwrap().status, 0);
}

#[tokio::test]
async fn command_rejected_for_another_reason_fails_and_its_cmd_sn_is_plugged() {
    let (_t, s, mut c) = open(FakeTargetConfig::default(), |_| {}).await;
    let h = spawn_cmd(&s, TUR.to_vec(), DataDirection::None);
    let cmd = c.recv_command().await.unwrap();
    c.exp_cmd_sn = cmd.cmd_sn;
    let r = reject_of(
        &mut c,
        Pdu::ScsiCommand(cmd.clone()),
        RejectReason::PROTOCOL_ERROR,
    );
    c.send(r).await.unwrap();
    assert!(matches!(join(h).await, Err(Error::Rejected(_))));
    // RFC 7143 §7.3, §11.5.1: ABORT TASK with the command's CmdSN as RefCmdSN.
    let Pdu::TaskMgmtRequest(tmf) = c.recv().await.unwrap() else {
        panic!("expected ABORT TASK")
    };
    assert_eq!(tmf.function, TmfFunction::ABORT_TASK);
    assert!(tmf.immediate);
    assert_eq!(
        (tmf.referenced_task_tag, tmf.ref_cmd_sn),
        (cmd.itt, cmd.cmd_sn)
    );
    c.exp_cmd_sn = cmd.cmd_sn.wrapping_add(1);
    let r = c.tmf_response(tmf.itt, TmfResponse::TASK_DOES_NOT_EXIST);
    c.send(r).await.unwrap();
    // The session goes on.
    let h = spawn_cmd(&s, TUR.to_vec(), DataDirection::None);
    let next = c.recv_command().await.unwrap();
    assert_eq!(next.cmd_sn, cmd.cmd_sn.wrapping_add(1));
    c.complete_good(next.itt).await.unwrap();
    join(h).await.unwrap();
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}
