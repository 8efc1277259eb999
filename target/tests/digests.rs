//! Data digest errors on the target's receive side (RFC 7143 §7.8, §7.3,
//! §11.17.1), with a raw initiator built on `proto` and CRC32C digests on.
//!
//! * A SCSI Command whose immediate data fails its digest is rejected
//!   (Data-Digest-Error) and discarded: nothing is written, its CmdSN
//!   stays a gap (§7.3), later commands are still served, and resending
//!   the same command (same ITT and CmdSN, §7.2.1) plugs the gap.
//! * A Data-Out that fails its digest is rejected, and the write ends with
//!   CHECK CONDITION, ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR (47h/05h)
//!   once its sequence has ended (F bit), with nothing written (§7.8).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{isid, start_server, Conn};
use iscsi_target::config::SessionLimits;
use proto::pdu::{DataOut, Pdu, RejectReason, ScsiCommand, ScsiResponse, TaskAttr, BHS_LEN};
use proto::scsi::sense::{Asc, Sense, SenseKey};
use proto::serial::CmdSn;
use proto::session::data_out::{data_out_pdus, DataOutTarget};
use tokio::io::AsyncWriteExt;

const T: &str = "iqn.2024-01.rs.iscsi:test.digests";
const SHORT: Duration = Duration::from_millis(300);
const LONG: Duration = Duration::from_secs(5);
/// Offset of the first data byte on the wire: BHS and header digest.
const DATA_AT: usize = BHS_LEN + 4;

async fn login_with_digests(s: &iscsi_target::server::Server, n: u8) -> Conn {
    let mut c = Conn::login_with(s.local_addrs()[0], Some(T), isid(n), 0, 0, |cfg| {
        cfg.operational = cfg.operational.clone().with_digests_required();
    })
    .await
    .unwrap();
    assert!(c.digests.header && c.digests.data, "digests not negotiated");
    c.clear_unit_attention().await.unwrap();
    c
}

fn write10(c: &mut Conn, itt: u32, cmd_sn: CmdSn, lba: u32, data: &[u8], imm: bool) -> ScsiCommand {
    let blocks = (data.len() / 512) as u16;
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    ScsiCommand {
        immediate: false,
        final_: true,
        read: false,
        write: true,
        attr: TaskAttr::SIMPLE,
        lun: 0,
        itt,
        expected_data_transfer_length: data.len() as u32,
        cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        cdb: Bytes::copy_from_slice(&cdb),
        bidi_read_length: None,
        data: if imm {
            Bytes::copy_from_slice(data)
        } else {
            Bytes::new()
        },
    }
}

/// Send `pdu` with one bit of its data segment flipped (so that only the
/// data digest fails).
async fn send_corrupted(c: &mut Conn, pdu: Pdu) {
    let mut wire = pdu.encode(c.digests).to_bytes().to_vec();
    wire[DATA_AT + 1] ^= 0x10;
    c.stream.write_all(&wire).await.unwrap();
}

async fn expect_reject(c: &mut Conn, itt: u32) -> proto::pdu::Reject {
    match c.recv_timeout(LONG).await {
        Some(Ok(Pdu::Reject(r))) => {
            assert_eq!(r.reason, RejectReason::DATA_DIGEST_ERROR);
            assert_eq!(r.rejected_itt(), Some(itt), "Reject carries the header");
            r
        }
        other => panic!("expected a Reject, got {other:?}"),
    }
}

async fn expect_response(c: &mut Conn, itt: u32) -> ScsiResponse {
    match c.recv_timeout(LONG).await {
        Some(Ok(Pdu::ScsiResponse(r))) if r.itt == itt => r,
        other => panic!("expected the SCSI Response of ITT {itt:#x}, got {other:?}"),
    }
}

fn assert_protocol_crc_error(r: &ScsiResponse) {
    assert_eq!(r.status, 0x02, "CHECK CONDITION");
    let sense = Sense::parse(&r.sense().expect("sense data")).expect("parseable sense");
    assert_eq!(sense.key, SenseKey::ABORTED_COMMAND);
    assert_eq!(sense.asc, Asc::PROTOCOL_SERVICE_CRC_ERROR, "47h/05h");
}

async fn read_lba(c: &mut Conn, lba: u32, blocks: u16) -> Vec<u8> {
    let r = c.read10(lba, blocks).await.unwrap();
    assert_eq!(r.status, 0);
    r.data
}

#[tokio::test]
async fn corrupted_immediate_data_is_rejected_never_written_and_retry_plugs_the_gap() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let mut c = login_with_digests(&s, 1).await;
    let data = vec![0xa5u8; 512];
    let gap = c.cmd_sn;
    let itt = c.next_itt();
    let cmd = write10(&mut c, itt, gap, 7, &data, true);
    c.cmd_sn = c.cmd_sn.wrapping_add(1);
    send_corrupted(&mut c, Pdu::ScsiCommand(cmd.clone())).await;
    let r = expect_reject(&mut c, itt).await;
    // RFC 7143 §7.3: the rejected command's CmdSN is not considered received.
    assert_eq!(r.exp_cmd_sn, gap, "a discarded command must leave a gap");
    assert!(
        c.recv_timeout(SHORT).await.is_none(),
        "no response to a discarded command"
    );

    // The window is not stuck: the next CmdSN is served, and the LBA was
    // not written.
    assert_eq!(read_lba(&mut c, 7, 1).await, vec![0u8; 512]);

    // Plugging the gap (§7.2.1 retry: same ITT, CmdSN and data) works and
    // moves ExpCmdSN over both commands.
    c.send(Pdu::ScsiCommand(cmd)).await;
    let r = expect_response(&mut c, itt).await;
    assert_eq!(r.status, 0, "the retried write succeeds");
    assert_eq!(r.exp_cmd_sn, c.cmd_sn, "the gap is plugged");
    assert_eq!(read_lba(&mut c, 7, 1).await, data);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// A write of `len` bytes without immediate data; returns its ITT and the
/// Data-Out PDUs answering its R2T(s).
async fn write_via_r2t(c: &mut Conn, lba: u32, data: &[u8]) -> (u32, Vec<DataOut>) {
    let itt = c.next_itt();
    let cmd = write10(c, itt, c.cmd_sn, lba, data, false);
    c.cmd_sn = c.cmd_sn.wrapping_add(1);
    c.send(Pdu::ScsiCommand(cmd)).await;
    let Some(Ok(Pdu::R2t(r2t))) = c.recv_timeout(LONG).await else {
        panic!("expected an R2T");
    };
    assert_eq!(r2t.buffer_offset, 0);
    assert_eq!(
        r2t.desired_data_transfer_length as usize,
        data.len(),
        "one burst"
    );
    let to = DataOutTarget {
        lun: 0,
        itt,
        ttt: r2t.ttt,
    };
    let seg = 4096u32.min(c.outcome.connection.max_send_data_segment_length);
    let data = Bytes::copy_from_slice(data);
    let pdus: Vec<DataOut> = data_out_pdus(&data, to, 0, data.len() as u32, seg)
        .map(|mut d| {
            d.exp_stat_sn = c.exp_stat_sn;
            d
        })
        .collect();
    (itt, pdus)
}

#[tokio::test]
async fn corrupted_final_data_out_ends_the_write_with_protocol_crc_error() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let mut c = login_with_digests(&s, 2).await;
    let data = vec![0x3cu8; 16 * 512];
    let (itt, mut pdus) = write_via_r2t(&mut c, 16, &data).await;
    let last = pdus.pop().expect("Data-Out PDUs");
    assert!(last.final_);
    for d in pdus {
        c.send(Pdu::DataOut(d)).await;
    }
    send_corrupted(&mut c, Pdu::DataOut(last)).await;
    expect_reject(&mut c, itt).await;
    let r = expect_response(&mut c, itt).await;
    assert_protocol_crc_error(&r);
    // The window moved on: the next command is served, and no byte of the
    // failed write reached the LUN.
    assert_eq!(read_lba(&mut c, 16, 16).await, vec![0u8; data.len()]);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn corrupted_early_data_out_answers_only_after_the_sequence_ends() {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let mut c = login_with_digests(&s, 3).await;
    let data: Vec<u8> = (0..32 * 512).map(|i| (i % 251) as u8).collect();
    let (itt, pdus) = write_via_r2t(&mut c, 40, &data).await;
    assert!(pdus.len() >= 3, "several Data-Out PDUs: {}", pdus.len());
    let mut pdus = pdus.into_iter();
    send_corrupted(&mut c, Pdu::DataOut(pdus.next().unwrap())).await;
    expect_reject(&mut c, itt).await;
    let last = pdus.next_back().unwrap();
    for d in pdus {
        c.send(Pdu::DataOut(d)).await;
    }
    // RFC 7143 §7.8: no response before the Data-Out with the F bit.
    assert!(
        c.recv_timeout(SHORT).await.is_none(),
        "the target answered before the sequence ended"
    );
    c.send(Pdu::DataOut(last)).await;
    let r = expect_response(&mut c, itt).await;
    assert_protocol_crc_error(&r);
    assert_eq!(read_lba(&mut c, 40, 32).await, vec![0u8; data.len()]);
    // The same write sent again as a new command succeeds.
    let w = c.write10(40, &data).await.unwrap();
    assert_eq!(w.status, 0);
    assert_eq!(read_lba(&mut c, 40, 32).await, data);
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}
