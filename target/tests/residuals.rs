//! Expected Data Transfer Length against the CDB's transfer length, for
//! every data-out command, through a raw initiator on loopback (RFC 7143
//! §11.4.5.1 residuals; the rule is in `scsi::transfer`): the bytes sent
//! land, or the command ends in CHECK CONDITION having written nothing,
//! and the residual always tells the initiator the difference. Each case
//! reads the medium back.

mod common;

use common::{isid, start_server, CmdResult, Conn};
use iscsi_target::config::SessionLimits;
use proto::scsi::cdb;
use proto::scsi::{Asc, Sense, SenseKey};

const T: &str = "iqn.2024-01.rs.iscsi:test.residuals";
const BS: usize = 512;

async fn session(n: u8) -> (iscsi_target::server::Server, Conn) {
    let s = start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let c = Conn::login(s.local_addrs()[0], Some(T), isid(n), 0, 0)
        .await
        .expect("login");
    (s, c)
}

fn assert_refused(r: &CmdResult, what: &str) {
    assert_eq!(r.status, 2, "{what}: expected CHECK CONDITION, got {r:?}");
    let s = Sense::parse(r.sense.as_deref().unwrap_or_default()).expect("sense data");
    assert_eq!(
        (s.key, s.asc),
        (
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT
        ),
        "{what}"
    );
}

fn assert_good(r: &CmdResult, what: &str) {
    assert_eq!(r.status, 0, "{what}: expected GOOD, got {r:?}");
}

async fn fill(c: &mut Conn, lba: u32, blocks: usize, byte: u8) {
    let r = c.write10(lba, &vec![byte; blocks * BS]).await.unwrap();
    assert_good(&r, "fill");
}

async fn read(c: &mut Conn, lba: u32, blocks: u16) -> Vec<u8> {
    let r = c.read10(lba, blocks).await.unwrap();
    assert_good(&r, "read back");
    r.data
}

/// One block at LBA `lba` in each WRITE / WRITE AND VERIFY form.
fn one_block_writes(lba: u8) -> Vec<(&'static str, Vec<u8>)> {
    let w12 = vec![0xaa, 0, 0, 0, 0, lba, 0, 0, 0, 1, 0, 0];
    let wv10 = vec![0x2e, 0, 0, 0, 0, lba, 0, 0, 1, 0];
    let mut wv12 = w12.clone();
    wv12[0] = 0xae;
    let mut wv16 = cdb::write16(lba.into(), 1, false).as_bytes().to_vec();
    wv16[0] = 0x8e;
    vec![
        ("WRITE(6)", vec![0x0a, 0, 0, lba, 1, 0]),
        (
            "WRITE(10)",
            cdb::write10(lba.into(), 1, false).as_bytes().to_vec(),
        ),
        ("WRITE(12)", w12),
        (
            "WRITE(16)",
            cdb::write16(lba.into(), 1, false).as_bytes().to_vec(),
        ),
        ("WRITE AND VERIFY(10)", wv10),
        ("WRITE AND VERIFY(12)", wv12),
        ("WRITE AND VERIFY(16)", wv16),
    ]
}

/// Issue 10's example, for every WRITE form: one 512-byte block with
/// EDTL 200. The old target answered GOOD with a residual overflow and
/// wrote nothing; now the command is refused, the block keeps its old
/// contents, and the residual overflow of 312 is still reported.
#[tokio::test]
async fn a_write_ending_inside_a_block_is_refused_and_writes_nothing() {
    let (s, mut c) = session(1).await;
    for (i, (name, cdb)) in one_block_writes(8).into_iter().enumerate() {
        let byte = b'a' + i as u8;
        fill(&mut c, 8, 1, byte).await;
        let r = c.command(0, &cdb, &[b'X'; 200], 0).await.unwrap();
        assert_refused(&r, name);
        assert!(r.overflow && !r.underflow, "{name}: {r:?}");
        assert_eq!(r.residual, (BS - 200) as u32, "{name}");
        assert!(
            read(&mut c, 8, 1).await.iter().all(|&b| b == byte),
            "{name}: the refused command changed the medium"
        );
    }
    s.shutdown_with_grace(std::time::Duration::from_millis(200))
        .await;
}

/// EDTL a whole number of blocks below the CDB's: those blocks are written
/// (GOOD, residual overflow; libiscsi's Write10Residuals), the rest of the
/// range keeps its contents. EDTL above the CDB's: only the CDB's blocks
/// are written (residual underflow).
#[tokio::test]
async fn whole_blocks_received_are_written_and_only_those() {
    let (s, mut c) = session(2).await;
    fill(&mut c, 0, 2, b'a').await;
    let w2 = cdb::write10(0, 2, false);
    let r = c.command(0, w2.as_bytes(), &[b'b'; BS], 0).await.unwrap();
    assert_good(&r, "2 blocks, EDTL 1 block");
    assert!(r.overflow && r.residual == BS as u32, "{r:?}");
    let d = read(&mut c, 0, 2).await;
    assert!(d[..BS].iter().all(|&b| b == b'b') && d[BS..].iter().all(|&b| b == b'a'));

    fill(&mut c, 0, 2, b'a').await;
    let w1 = cdb::write10(0, 1, false);
    let r = c
        .command(0, w1.as_bytes(), &[b'c'; 2 * BS], 0)
        .await
        .unwrap();
    assert_good(&r, "1 block, EDTL 2 blocks");
    assert!(r.underflow && r.residual == BS as u32, "{r:?}");
    let d = read(&mut c, 0, 2).await;
    assert!(d[..BS].iter().all(|&b| b == b'c') && d[BS..].iter().all(|&b| b == b'a'));
    s.shutdown_with_grace(std::time::Duration::from_millis(200))
        .await;
}

/// Underflow on commands whose Data-Out is one unit: the first SPDTL bytes
/// are the command's data and the rest is ignored, as for WRITE. The old
/// target refused WRITE SAME and COMPARE AND WRITE here.
#[tokio::test]
async fn underflow_runs_every_data_out_command_on_the_cdb_length() {
    let (s, mut c) = session(3).await;
    fill(&mut c, 16, 2, b'a').await;
    // WRITE SAME(10) of 2 blocks with 2 blocks of Data-Out: the first block
    // is the pattern.
    let ws = [0x41, 0, 0, 0, 0, 16, 0, 0, 2, 0];
    let mut data = vec![b'p'; BS];
    data.extend_from_slice(&[b'q'; BS]);
    let r = c.command(0, &ws, &data, 0).await.unwrap();
    assert_good(&r, "WRITE SAME, EDTL 2 blocks");
    assert!(r.underflow && r.residual == BS as u32, "{r:?}");
    assert!(read(&mut c, 16, 2).await.iter().all(|&b| b == b'p'));
    // COMPARE AND WRITE of 1 block (verify 'p', write 'w') plus 100 bytes.
    let caw = [0x89, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0];
    let mut data = vec![b'p'; BS];
    data.extend_from_slice(&[b'w'; BS]);
    data.extend_from_slice(&[b'z'; 100]);
    let r = c.command(0, &caw, &data, 0).await.unwrap();
    assert_good(&r, "COMPARE AND WRITE, EDTL + 100");
    assert!(r.underflow && r.residual == 100, "{r:?}");
    let d = read(&mut c, 16, 2).await;
    assert!(d[..BS].iter().all(|&b| b == b'w') && d[BS..].iter().all(|&b| b == b'p'));
    s.shutdown_with_grace(std::time::Duration::from_millis(200))
        .await;
}

/// Overflow on commands whose Data-Out cannot be cut: refused with nothing
/// changed, whatever part of the list arrived.
#[tokio::test]
async fn short_parameter_lists_and_indivisible_data_are_refused() {
    let (s, mut c) = session(4).await;
    fill(&mut c, 32, 2, b'a').await;
    // COMPARE AND WRITE: a whole block, but half of what it needs (the
    // old target answered INVALID FIELD IN CDB).
    let caw = [0x89, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0, 0, 1, 0, 0];
    let r = c.command(0, &caw, &[b'a'; BS], 0).await.unwrap();
    assert_refused(&r, "COMPARE AND WRITE");
    assert!(r.overflow && r.residual == BS as u32, "{r:?}");
    // WRITE SAME(10): part of its one block.
    let ws = [0x41, 0, 0, 0, 0, 32, 0, 0, 2, 0];
    let r = c.command(0, &ws, &[b'w'; 200], 0).await.unwrap();
    assert_refused(&r, "WRITE SAME");
    // UNMAP of LBA 32, parameter list cut after the header.
    let params = cdb::encode_unmap_params(&[(32, 2)]);
    let um = cdb::unmap(params.len() as u16);
    let r = c.command(0, um.as_bytes(), &params[..16], 0).await.unwrap();
    assert_refused(&r, "UNMAP");
    assert!(read(&mut c, 32, 2).await.iter().all(|&b| b == b'a'));
    // PERSISTENT RESERVE OUT REGISTER, 24-byte list, 20 bytes sent: no key
    // registered afterwards.
    let prout = [0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0];
    let mut list = [0u8; 24];
    list[8..16].copy_from_slice(&0x1234u64.to_be_bytes());
    let r = c.command(0, &prout, &list[..20], 0).await.unwrap();
    assert_refused(&r, "PERSISTENT RESERVE OUT");
    let r = c
        .command(0, &[0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0], &[], 64)
        .await
        .unwrap();
    assert_good(&r, "READ KEYS");
    assert_eq!(&r.data[4..8], &[0, 0, 0, 0], "no key registered");
    // MODE SELECT(6) and (10), EXTENDED COPY: lists cut short.
    let r = c
        .command(0, &[0x15, 0x10, 0, 0, 24, 0], &[0u8; 10], 0)
        .await
        .unwrap();
    assert_refused(&r, "MODE SELECT(6)");
    let ms10 = [0x55, 0x10, 0, 0, 0, 0, 0, 0, 24, 0];
    let r = c.command(0, &ms10, &[0u8; 10], 0).await.unwrap();
    assert_refused(&r, "MODE SELECT(10)");
    let xcopy = [0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0];
    let r = c.command(0, &xcopy, &[0u8; 32], 0).await.unwrap();
    assert_refused(&r, "EXTENDED COPY");
    s.shutdown_with_grace(std::time::Duration::from_millis(200))
        .await;
}

/// Read side: EDTL below the CDB's length delivers exactly EDTL bytes with
/// GOOD and a residual overflow (nothing is lost: the initiator asked for
/// less); above it, the CDB's length with a residual underflow.
#[tokio::test]
async fn reads_deliver_min_of_edtl_and_cdb_length_with_the_residual() {
    let (s, mut c) = session(5).await;
    fill(&mut c, 40, 2, b'r').await;
    let r10 = cdb::read10(40, 2, false);
    let r = c.command(0, r10.as_bytes(), &[], 700).await.unwrap();
    assert_good(&r, "READ, EDTL 700");
    assert_eq!(r.data.len(), 700);
    assert!(r.overflow && r.residual == (2 * BS - 700) as u32, "{r:?}");
    assert!(r.data.iter().all(|&b| b == b'r'));
    let r = c
        .command(0, r10.as_bytes(), &[], 4 * BS as u32)
        .await
        .unwrap();
    assert_good(&r, "READ, EDTL 4 blocks");
    assert_eq!(r.data.len(), 2 * BS);
    assert!(r.underflow && r.residual == (2 * BS) as u32, "{r:?}");
    s.shutdown_with_grace(std::time::Duration::from_millis(200))
        .await;
}
