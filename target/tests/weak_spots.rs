//! Issue 10 item 3, through a raw initiator on loopback: sense data the
//! transport reports itself follows the LU's D_SENSE; SANITIZE keeps TEST
//! UNIT READY at NOT READY, SANITIZE IN PROGRESS for as long as it runs.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{isid, start_server, Conn};
use iscsi_target::config::SessionLimits;
use proto::pdu::{DataOut, Pdu, ScsiCommand, TaskAttr};
use proto::scsi::mode::Control;
use proto::scsi::{Asc, Sense, SenseKey};
use proto::serial::{CmdSn, DataSn, StatSn};

const T: &str = "iqn.2024-01.rs.iscsi:test.weak-spots";

fn write10(lba: u32, blocks: u16) -> Vec<u8> {
    proto::scsi::cdb::write10(lba, blocks, false)
        .as_bytes()
        .to_vec()
}

/// A WRITE(10) command PDU with this EDTL and no immediate data.
fn write_cmd(c: &mut Conn, itt: u32, cdb: &[u8], edtl: u32) -> Pdu {
    let p = Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_: true,
        read: false,
        write: true,
        attr: TaskAttr::SIMPLE,
        lun: 0,
        itt,
        expected_data_transfer_length: edtl,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        cdb: Bytes::copy_from_slice(cdb),
        bidi_read_length: None,
        data: Bytes::new(),
    });
    c.cmd_sn = c.cmd_sn.wrapping_add(1);
    p
}

/// The sense data of the SCSI Response to `itt`.
async fn check_condition(c: &mut Conn, itt: u32) -> Bytes {
    loop {
        match c.recv().await.expect("response") {
            Pdu::ScsiResponse(r) if r.itt == itt => {
                assert_eq!(r.status, 2, "expected CHECK CONDITION");
                return r.sense().expect("sense data");
            }
            Pdu::NopIn(_) => continue,
            other => panic!("expected SCSI Response, got {:?}", other.opcode()),
        }
    }
}

/// The transport's own errors (a write larger than its buffer limit, a
/// Data-Out with a TTT never issued) used fixed-format sense whatever the
/// initiator chose with D_SENSE; now they follow it, like the device
/// server's sense.
#[tokio::test]
async fn transport_sense_follows_d_sense() {
    let s = start_server(T, &["mem:4M"], SessionLimits::default()).await;
    let mut c = Conn::login(s.local_addrs()[0], Some(T), isid(1), 0, 0)
        .await
        .unwrap();
    for descriptor in [false, true] {
        let mut list = vec![0, 0, 0, 0];
        Control {
            d_sense: descriptor,
            tas: true,
            ..Default::default()
        }
        .page()
        .encode_into(&mut list);
        let sel = [0x15, 0x10, 0, 0, list.len() as u8, 0];
        let r = c.command(0, &sel, &list, 0).await.unwrap();
        assert_eq!(r.status, 0, "MODE SELECT D_SENSE={descriptor}: {r:?}");
        let want = if descriptor { 0x72 } else { 0x70 };

        let itt = c.next_itt();
        let p = write_cmd(&mut c, itt, &write10(0, 1), (64 << 20) + 512);
        c.send(p).await;
        let sense = check_condition(&mut c, itt).await;
        assert_eq!(sense[0], want, "oversized write: {sense:02x?}");
        let sd = Sense::parse(&sense).unwrap();
        assert_eq!(
            (sd.key, sd.asc),
            (SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
        );

        let itt = c.next_itt();
        let p = write_cmd(&mut c, itt, &write10(0, 8), 4096);
        c.send(p).await;
        let ttt = match c.recv().await.unwrap() {
            Pdu::R2t(r) => r.ttt,
            other => panic!("expected R2T, got {:?}", other.opcode()),
        };
        c.send(Pdu::DataOut(DataOut {
            final_: true,
            lun: 0,
            itt,
            ttt: ttt ^ 0x5a5a,
            exp_stat_sn: c.exp_stat_sn,
            data_sn: DataSn::new(0),
            buffer_offset: 0,
            data: Bytes::from(vec![0xee; 4096]),
        }))
        .await;
        let sense = check_condition(&mut c, itt).await;
        assert_eq!(sense[0], want, "data phase error: {sense:02x?}");
        let sd = Sense::parse(&sense).unwrap();
        assert_eq!(
            (sd.key, sd.asc),
            (SenseKey::ABORTED_COMMAND, Asc::new(0x4b, 0))
        );
    }
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// SANITIZE OVERWRITE with IMMED = 1 on a file LU large enough to take a
/// while: TEST UNIT READY answers NOT READY, SANITIZE IN PROGRESS with a
/// growing progress indication (the old target sent none) until the erase
/// is done, then GOOD, and the medium holds the pattern.
#[tokio::test]
async fn test_unit_ready_reports_sanitize_in_progress_until_done() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "file:{},size=64M,sanitize",
        dir.path().join("d.img").display()
    );
    let s = start_server(T, &[&spec], SessionLimits::default()).await;
    let mut c = Conn::login(s.local_addrs()[0], Some(T), isid(2), 0, 0)
        .await
        .unwrap();
    // OVERWRITE, IMMED, 8 passes of a 4-byte pattern.
    let params = [8, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef];
    let sanitize = [0x48, 0x80 | 0x01, 0, 0, 0, 0, 0, 0, params.len() as u8, 0];
    let r = c.command(0, &sanitize, &params, 0).await.unwrap();
    assert_eq!(r.status, 0, "SANITIZE IMMED: {r:?}");
    let started = Instant::now();
    let mut in_progress = 0;
    let mut last_progress = 0u16;
    loop {
        let r = c.command(0, &[0u8; 6], &[], 0).await.unwrap();
        if r.status == 0 {
            break;
        }
        let sd = Sense::parse(r.sense.as_deref().unwrap()).unwrap();
        assert_eq!(
            (sd.key, sd.asc),
            (SenseKey::NOT_READY, Asc::SANITIZE_IN_PROGRESS),
            "TEST UNIT READY while sanitizing"
        );
        // SPC-5 §4.4.2.4.4: the sense data carries a PROGRESS INDICATION
        // that only grows.
        let Some(proto::scsi::sense::SenseKeySpecific::Progress(p)) = sd.sense_key_specific else {
            panic!("no progress indication: {sd:?}")
        };
        assert!(
            p >= last_progress,
            "progress went back: {p} < {last_progress}"
        );
        last_progress = p;
        in_progress += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "SANITIZE never ends"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        in_progress > 0,
        "the overwrite finished before the first TEST UNIT READY"
    );
    assert!(last_progress > 0, "progress never moved");
    let r = c.read10(1000, 1).await.unwrap();
    assert_eq!(r.status, 0);
    assert!(r.data.chunks(4).all(|w| w == [0xde, 0xad, 0xbe, 0xef]));
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// Reads the one Login Response a refused connection gets, then checks the
/// connection closes.
async fn refused_login(mut sock: tokio::net::TcpStream, what: &str) -> proto::pdu::LoginResponse {
    let mut buf = bytes::BytesMut::new();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        common::read_pdu(&mut sock, &mut buf, proto::pdu::DigestConfig::NONE),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: no answer"));
    let Ok(Pdu::LoginResponse(resp)) = r else {
        panic!("{what}: expected a Login Response, got {r:?}")
    };
    let mut rest = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        sock.read(&mut rest).await
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: connection left open"));
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "{what}: more data after the reject"
    );
    resp
}

/// A PDU other than a Login Request as the first PDU, and a Login Request
/// whose data segment exceeds the login limit (8192 bytes, undecodable):
/// a Login Response with the PDU's ITT (0x020b "invalid request type
/// during login", 0x0200 "initiator error" for the undecodable one), then
/// the connection closes (it used to close without a word).
#[tokio::test]
async fn non_login_and_undecodable_pdus_during_login_get_a_login_reject() {
    use proto::pdu::{DigestConfig, LoginRequest, NopOut, Stage, RESERVED_TAG};
    use tokio::io::AsyncWriteExt;
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let addr = s.local_addrs()[0];

    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let nop = Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: 0x1234,
        ttt: RESERVED_TAG,
        cmd_sn: CmdSn::new(1),
        exp_stat_sn: StatSn::new(0),
        data: Bytes::new(),
    });
    sock.write_all(&nop.encode(DigestConfig::NONE).to_bytes())
        .await
        .unwrap();
    let r = refused_login(sock, "NOP-Out first").await;
    assert_eq!((r.status_class, r.status_detail, r.itt), (2, 0x0b, 0x1234));
    assert!(!r.transit);

    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = Pdu::LoginRequest(LoginRequest {
        transit: true,
        continue_: false,
        csg: Stage::SecurityNegotiation,
        nsg: Stage::LoginOperationalNegotiation,
        version_max: 0,
        version_min: 0,
        isid: isid(3),
        tsih: 0,
        itt: 0x77,
        cid: 0,
        cmd_sn: CmdSn::new(1),
        exp_stat_sn: StatSn::new(0),
        data: Bytes::from(vec![b'x'; 9000]),
    });
    sock.write_all(&big.encode(DigestConfig::NONE).to_bytes())
        .await
        .unwrap();
    let r = refused_login(sock, "9000-byte login segment").await;
    assert_eq!((r.status_class, r.status_detail, r.itt), (2, 0, 0x77));
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}
