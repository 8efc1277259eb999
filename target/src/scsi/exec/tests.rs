//! Device-server tests: every command's main and error paths, run through
//! `DeviceServer::execute` on memory and file backends.

use super::super::*;
use crate::backend::{FileBackend, FileOptions, MemoryBackend};
use proto::scsi::cdb::{self, CdbSize, Command, Rw};
use proto::scsi::inquiry::{self as inq, StandardInquiry};
use proto::scsi::{Asc, Lun, Sense, SenseKey, Status};

fn nx(i: u8) -> Nexus {
    Nexus {
        initiator_port: format!("iqn.2024-01.test:init{i},i,0x00023d00000{i}"),
        target_port: "iqn.2024-01.test:target,t,0x0001".into(),
        relative_target_port: 1,
    }
}

fn mem_lu(lun: u16, blocks: u64, bs: u32) -> LuConfig {
    let mut c = LuConfig::new(lun, Arc::new(MemoryBackend::new(blocks * bs as u64)));
    c.block_size = bs;
    c
}

fn server(cfgs: Vec<LuConfig>) -> Arc<DeviceServer> {
    DeviceServer::new(cfgs).unwrap()
}

async fn run(s: &DeviceServer, n: &Nexus, lun: u16, cdb: &[u8], data: &[u8]) -> ScsiResult {
    let req = ScsiRequest {
        lun: Lun::from_number(lun).0,
        cdb: Bytes::copy_from_slice(cdb),
        data_out: Bytes::copy_from_slice(data),
        expected_data_in_length: 1 << 20,
        task_attr: 1,
    };
    s.execute(n, req).await
}

/// Runs TEST UNIT READY until GOOD (consumes unit attentions).
async fn clear_ua(s: &DeviceServer, n: &Nexus, lun: u16) {
    for _ in 0..10 {
        if run(s, n, lun, cdb::test_unit_ready().as_bytes(), &[])
            .await
            .status
            == 0
        {
            return;
        }
    }
    panic!("unit attentions do not clear");
}

fn sense(r: &ScsiResult) -> Sense {
    assert_eq!(
        r.status,
        Status::CHECK_CONDITION.0,
        "expected CHECK CONDITION, got {r:?}"
    );
    r.sense_data().expect("sense data")
}

fn assert_sense(r: &ScsiResult, key: SenseKey, asc: Asc) {
    let s = sense(r);
    assert_eq!((s.key, s.asc), (key, asc), "{s:?}");
}

fn good(r: &ScsiResult) {
    assert_eq!(
        r.status,
        0,
        "expected GOOD, got {r:?} / {:?}",
        r.sense_data()
    );
}

fn w10(lba: u32, blocks: u16) -> Vec<u8> {
    cdb::write10(lba, blocks, false).as_bytes().to_vec()
}
fn r10(lba: u32, blocks: u16) -> Vec<u8> {
    cdb::read10(lba, blocks, false).as_bytes().to_vec()
}

#[tokio::test]
async fn power_on_unit_attention_then_good() {
    let s = server(vec![mem_lu(0, 1024, 512)]);
    let n = nx(1);
    // INQUIRY is neither blocked by nor clears the UA.
    good(&run(&s, &n, 0, cdb::inquiry(false, 0, 96).as_bytes(), &[]).await);
    let r = run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::UNIT_ATTENTION,
        Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
    );
    good(&run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await);
    // A second nexus gets its own.
    let r = run(&s, &nx(2), 0, &r10(0, 1), &[]).await;
    assert_sense(
        &r,
        SenseKey::UNIT_ATTENTION,
        Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
    );
    // REQUEST SENSE reports and clears a UA (here from a reset requested on
    // another nexus).
    s.lun_reset(Lun::from_number(0).0, &nx(2));
    let r = run(
        &s,
        &n,
        0,
        Command::RequestSense {
            desc: false,
            alloc_len: 252,
        }
        .encode()
        .as_bytes(),
        &[],
    )
    .await;
    good(&r);
    let sd = Sense::parse(&r.data_in).unwrap();
    assert_eq!(sd.key, SenseKey::UNIT_ATTENTION);
    good(&run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await);
    let r = run(
        &s,
        &n,
        0,
        Command::RequestSense {
            desc: true,
            alloc_len: 252,
        }
        .encode()
        .as_bytes(),
        &[],
    )
    .await;
    assert_eq!(r.data_in[0], 0x72);
    assert_eq!(Sense::parse(&r.data_in).unwrap().key, SenseKey::NO_SENSE);
}

#[tokio::test]
async fn inquiry_pages_and_missing_lun() {
    let mut c = mem_lu(0, 2048, 512);
    c.thin = true;
    c.serial_seed = "iqn.x:t /tmp/a".into();
    let s = server(vec![c]);
    let n = nx(1);
    let r = run(&s, &n, 0, cdb::inquiry(false, 0, 255).as_bytes(), &[]).await;
    good(&r);
    let std = StandardInquiry::parse(&r.data_in).unwrap();
    assert_eq!(
        (std.peripheral_qualifier, std.device_type, std.version),
        (0, 0, 6)
    );
    assert!(std.version_descriptors.contains(&inq::version::SBC_3));
    assert_eq!(r.data_in.len(), 96);
    // The residual counts from what was really sent.
    assert_eq!(r.transfer_length, Some(96));
    // Allocation length truncates.
    let r = run(&s, &n, 0, cdb::inquiry(false, 0, 5).as_bytes(), &[]).await;
    assert_eq!(r.data_in.len(), 5);
    // Supported pages are sorted and all answer.
    let r = run(&s, &n, 0, cdb::inquiry(true, 0, 255).as_bytes(), &[]).await;
    let (code, pages) = inq::parse_vpd(&r.data_in).unwrap();
    assert_eq!(code, 0);
    assert!(pages.windows(2).all(|w| w[0] < w[1]));
    assert!(pages.contains(&0xB2));
    for &p in pages {
        let r = run(&s, &n, 0, cdb::inquiry(true, p, 255).as_bytes(), &[]).await;
        good(&r);
        assert_eq!(r.data_in[1], p);
        assert_eq!(
            u16::from_be_bytes([r.data_in[2], r.data_in[3]]) as usize + 4,
            r.data_in.len()
        );
    }
    let r = run(&s, &n, 0, cdb::inquiry(true, 0x80, 255).as_bytes(), &[]).await;
    assert_eq!(
        &r.data_in[4..],
        lu::serial_from_seed("iqn.x:t /tmp/a").as_bytes()
    );
    let r = run(&s, &n, 0, cdb::inquiry(true, 0xB0, 255).as_bytes(), &[]).await;
    let bl = inq::BlockLimits::parse(&r.data_in[4..]);
    assert!(bl.max_unmap_lba_count > 0 && bl.max_compare_and_write_length > 0);
    let r = run(&s, &n, 0, cdb::inquiry(true, 0x83, 255).as_bytes(), &[]).await;
    let ds = inq::parse_device_identification(&r.data_in[4..]);
    assert_eq!(ds[0].designator_type, inq::designator::NAA);
    assert_eq!(ds[0].value[0] >> 4, 6);
    // Unknown VPD page, page code without EVPD.
    let r = run(&s, &n, 0, cdb::inquiry(true, 0x99, 255).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
    let r = run(&s, &n, 0, cdb::inquiry(false, 0x80, 255).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB);
    // LUN 7 does not exist.
    let r = run(&s, &n, 7, cdb::inquiry(false, 0, 96).as_bytes(), &[]).await;
    good(&r);
    assert_eq!(r.data_in[0], 0x7F);
    let r = run(&s, &n, 7, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::LOGICAL_UNIT_NOT_SUPPORTED,
    );
    let r = run(&s, &n, 7, cdb::report_luns(64).as_bytes(), &[]).await;
    good(&r);
    assert_eq!(&r.data_in[..4], &[0, 0, 0, 8]);
}

async fn read_write_suite(s: &DeviceServer, bs: usize) {
    let n = nx(1);
    clear_ua(s, &n, 0).await;
    let blocks = 4u16;
    let data: Vec<u8> = (0..blocks as usize * bs).map(|i| (i % 251) as u8).collect();
    good(&run(s, &n, 0, &w10(10, blocks), &data).await);
    let r = run(s, &n, 0, &r10(10, blocks), &[]).await;
    good(&r);
    assert_eq!(&r.data_in[..], &data[..]);
    assert_eq!(r.transfer_length, Some((blocks as usize * bs) as u32));
    // All CDB sizes address the same blocks.
    for size in [CdbSize::Six, CdbSize::Twelve, CdbSize::Sixteen] {
        let c = Command::Read {
            size,
            rw: Rw {
                lba: 10,
                blocks: 4,
                ..Rw::default()
            },
        }
        .encode();
        let r = run(s, &n, 0, c.as_bytes(), &[]).await;
        assert_eq!(&r.data_in[..], &data[..]);
    }
    // FUA write.
    good(
        &run(
            s,
            &n,
            0,
            cdb::write16(11, 1, true).as_bytes(),
            &data[bs..2 * bs],
        )
        .await,
    );
    // Beyond the end and transfer length 0.
    let nb = s.lu(0).unwrap().num_blocks();
    let r = run(s, &n, 0, cdb::read16(nb - 1, 2, false).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE);
    let r = run(s, &n, 0, cdb::read16(u64::MAX, 1, false).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE);
    let r = run(s, &n, 0, &r10(0, 0), &[]).await;
    good(&r);
    assert!(r.data_in.is_empty());
    let r = run(s, &n, 0, cdb::read16(nb + 1, 0, false).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE);
    // Short Data-Out: nothing written.
    let r = run(s, &n, 0, &w10(20, 2), &data[..bs]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::new(0x0E, 0x03));
    // RDPROTECT set: invalid field with a bit pointer.
    let mut c = r10(0, 1);
    c[1] = 0x40;
    let sd = sense(&run(s, &n, 0, &c, &[]).await);
    assert_eq!(sd.asc, Asc::INVALID_FIELD_IN_CDB);
    assert_eq!(
        sd.sense_key_specific,
        Some(proto::scsi::sense::SenseKeySpecific::FieldPointer {
            cdb: true,
            bit: Some(6),
            field: 1
        })
    );
    // Unknown opcode.
    let r = run(s, &n, 0, &[0xC5, 0, 0, 0, 0, 0], &[]).await;
    assert_sense(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_COMMAND_OPERATION_CODE,
    );
    // VERIFY with BYTCHK=1: match, then miscompare with the offset.
    let v = Command::Verify {
        size: CdbSize::Ten,
        rw: Rw {
            lba: 10,
            blocks: 2,
            ..Rw::default()
        },
        bytchk: 1,
    }
    .encode();
    good(&run(s, &n, 0, v.as_bytes(), &data[..2 * bs]).await);
    let mut bad = data[..2 * bs].to_vec();
    bad[bs + 3] ^= 0xFF;
    let sd = sense(&run(s, &n, 0, v.as_bytes(), &bad).await);
    assert_eq!(
        (sd.key, sd.asc, sd.information),
        (
            SenseKey::MISCOMPARE,
            Asc::MISCOMPARE_DURING_VERIFY,
            Some(bs as u64 + 3)
        )
    );
    // WRITE AND VERIFY.
    let wv = Command::WriteAndVerify {
        size: CdbSize::Sixteen,
        rw: Rw {
            lba: 30,
            blocks: 1,
            ..Rw::default()
        },
        bytchk: 1,
    }
    .encode();
    good(&run(s, &n, 0, wv.as_bytes(), &data[..bs]).await);
    // ORWRITE.
    good(&run(s, &n, 0, &w10(40, 1), &vec![0x0F; bs]).await);
    let ow = Command::OrWrite {
        rw: Rw {
            lba: 40,
            blocks: 1,
            ..Rw::default()
        },
    }
    .encode();
    good(&run(s, &n, 0, ow.as_bytes(), &vec![0xF0; bs]).await);
    let r = run(s, &n, 0, &r10(40, 1), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0xFF));
    // SYNCHRONIZE CACHE, PRE-FETCH.
    good(&run(s, &n, 0, cdb::synchronize_cache16(0, 0).as_bytes(), &[]).await);
    let pf = Command::PreFetch {
        size: CdbSize::Ten,
        lba: 0,
        blocks: 8,
        immed: false,
    }
    .encode();
    good(&run(s, &n, 0, pf.as_bytes(), &[]).await);
}

#[tokio::test]
async fn read_write_memory_512() {
    read_write_suite(&server(vec![mem_lu(0, 4096, 512)]), 512).await;
}

#[tokio::test]
async fn read_write_memory_4096() {
    let s = server(vec![mem_lu(0, 1024, 4096)]);
    read_write_suite(&s, 4096).await;
    let n = nx(1);
    let r = run(&s, &n, 0, cdb::read_capacity16(32).as_bytes(), &[]).await;
    let rc = inq::ReadCapacity16::parse(&r.data_in).unwrap();
    assert_eq!((rc.last_lba, rc.block_len), (1023, 4096));
    let r = run(&s, &n, 0, Command::ReadCapacity10.encode().as_bytes(), &[]).await;
    assert_eq!(&r.data_in[..], &[0, 0, 3, 0xFF, 0, 0, 0x10, 0]);
}

#[tokio::test]
async fn read_write_file_backend() {
    let dir = tempfile::tempdir().unwrap();
    let be = FileBackend::open(
        dir.path().join("d.img"),
        &FileOptions {
            size: Some(4 << 20),
            thin: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = LuConfig::new(0, Arc::new(be));
    c.mode = IoMode::WriteThrough;
    c.thin = true;
    read_write_suite(&server(vec![c]), 512).await;
}

#[tokio::test]
async fn read_only_and_software_write_protect() {
    let mut c = mem_lu(0, 1024, 512);
    c.mode = IoMode::ReadOnly;
    let s = server(vec![c, mem_lu(1, 1024, 512)]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    let r = run(&s, &n, 0, &w10(0, 1), &[0u8; 512]).await;
    assert_sense(&r, SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED);
    let r = run(
        &s,
        &n,
        0,
        cdb::write_same16(0, 1, false, false).as_bytes(),
        &[0u8; 512],
    )
    .await;
    assert_sense(&r, SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED);
    // MODE SENSE reports WP.
    let ms = Command::ModeSense {
        size: CdbSize::Six,
        dbd: false,
        llbaa: false,
        pc: 0,
        page: 0x3F,
        subpage: 0,
        alloc_len: 255,
    };
    let r = run(&s, &n, 0, ms.encode().as_bytes(), &[]).await;
    assert_eq!(r.data_in[2] & 0x80, 0x80);
    // SWP through MODE SELECT on LUN 1.
    clear_ua(&s, &n, 1).await;
    let r = run(&s, &n, 1, ms.encode().as_bytes(), &[]).await;
    assert_eq!(r.data_in[2] & 0x90, 0x10);
    let p = proto::scsi::mode::parse_mode_parameters(false, &r.data_in).unwrap();
    let ctl = p.pages.iter().find(|(_, p)| p.page == 0x0A).unwrap();
    let mut page = ctl.1.clone();
    page.body[2] |= 0x08;
    let mut list = vec![0, 0, 0, 0];
    page.encode_into(&mut list);
    let sel = Command::ModeSelect {
        size: CdbSize::Six,
        pf: true,
        sp: false,
        param_len: list.len() as u16,
    };
    good(&run(&s, &n, 1, sel.encode().as_bytes(), &list).await);
    let r = run(&s, &n, 1, &w10(0, 1), &[0u8; 512]).await;
    assert_sense(&r, SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED);
    // Another nexus learns that mode parameters changed.
    let r = run(&s, &nx(2), 1, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::UNIT_ATTENTION,
        Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
    );
    // Changing a non-changeable bit is refused with a pointer to it.
    page.body[2] = 0x08 | 0x40;
    let mut list = vec![0, 0, 0, 0];
    page.encode_into(&mut list);
    let sel = Command::ModeSelect {
        size: CdbSize::Six,
        pf: true,
        sp: false,
        param_len: list.len() as u16,
    };
    let sd = sense(&run(&s, &n, 1, sel.encode().as_bytes(), &list).await);
    assert_eq!(sd.asc, Asc::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(
        sd.sense_key_specific,
        Some(proto::scsi::sense::SenseKeySpecific::FieldPointer {
            cdb: false,
            bit: Some(6),
            field: 8
        })
    );
}

#[tokio::test]
async fn d_sense_switches_to_descriptor_format() {
    let s = server(vec![mem_lu(0, 1024, 512)]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    let mut list = vec![0, 0, 0, 0];
    proto::scsi::mode::Control {
        d_sense: true,
        tas: true,
        ..Default::default()
    }
    .page()
    .encode_into(&mut list);
    let sel = Command::ModeSelect {
        size: CdbSize::Six,
        pf: true,
        sp: false,
        param_len: list.len() as u16,
    };
    good(&run(&s, &n, 0, sel.encode().as_bytes(), &list).await);
    let r = run(&s, &n, 0, cdb::read16(1 << 40, 1, false).as_bytes(), &[]).await;
    assert_eq!(r.sense.as_ref().unwrap()[0], 0x72);
    assert_eq!(sense(&r).asc, Asc::LBA_OUT_OF_RANGE);
    // Saved values are not supported.
    let ms = Command::ModeSense {
        size: CdbSize::Ten,
        dbd: true,
        llbaa: false,
        pc: 3,
        page: 0x3F,
        subpage: 0,
        alloc_len: 255,
    };
    let r = run(&s, &n, 0, ms.encode().as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::SAVING_PARAMETERS_NOT_SUPPORTED,
    );
}

#[tokio::test]
async fn compare_and_write_semantics() {
    let s = server(vec![mem_lu(0, 1024, 512)]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    good(&run(&s, &n, 0, &w10(5, 1), &[0xAA; 512]).await);
    let caw = Command::CompareAndWrite {
        rw: Rw {
            lba: 5,
            blocks: 1,
            ..Rw::default()
        },
    }
    .encode();
    let mut d = vec![0xAA; 512];
    d.extend_from_slice(&[0xBB; 512]);
    good(&run(&s, &n, 0, caw.as_bytes(), &d).await);
    let r = run(&s, &n, 0, &r10(5, 1), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0xBB));
    // Miscompare: INFORMATION is the offset of the first differing byte.
    let sd = sense(&run(&s, &n, 0, caw.as_bytes(), &d).await);
    assert_eq!((sd.key, sd.information), (SenseKey::MISCOMPARE, Some(0)));
    // Wrong Data-Out size.
    let r = run(&s, &n, 0, caw.as_bytes(), &d[..512]).await;
    assert_eq!(r.status, 2);
    assert_eq!(
        s.data_out_length(Lun::from_number(0).0, caw.as_bytes()),
        1024
    );
}

/// Concurrent COMPARE AND WRITE increments of one counter block: with
/// atomic compare-and-write no increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_write_is_atomic_under_concurrency() {
    let s = server(vec![mem_lu(0, 64, 512)]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    good(&run(&s, &n, 0, &w10(0, 1), &[0u8; 512]).await);
    let tasks = 8;
    let per = 25u64;
    let mut hs = Vec::new();
    for _ in 0..tasks {
        let s = s.clone();
        let n = n.clone();
        hs.push(tokio::spawn(async move {
            let caw = Command::CompareAndWrite {
                rw: Rw {
                    lba: 0,
                    blocks: 1,
                    ..Rw::default()
                },
            }
            .encode();
            let mut done = 0;
            while done < per {
                let cur = run(&s, &n, 0, &r10(0, 1), &[]).await.data_in;
                let v = u64::from_be_bytes(cur[..8].try_into().unwrap());
                let mut d = cur.to_vec();
                let mut next = vec![0u8; 512];
                next[..8].copy_from_slice(&(v + 1).to_be_bytes());
                d.extend_from_slice(&next);
                let r = run(&s, &n, 0, caw.as_bytes(), &d).await;
                if r.status == 0 {
                    done += 1;
                } else {
                    assert_eq!(sense(&r).key, SenseKey::MISCOMPARE);
                }
                // Interleave plain writes elsewhere.
                run(&s, &n, 0, &w10(1, 1), &[1u8; 512]).await;
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    let r = run(&s, &n, 0, &r10(0, 1), &[]).await;
    assert_eq!(
        u64::from_be_bytes(r.data_in[..8].try_into().unwrap()),
        tasks * per
    );
}

#[tokio::test]
async fn thin_provisioning_on_sparse_file() {
    let dir = tempfile::tempdir().unwrap();
    let be = FileBackend::open(
        dir.path().join("thin.img"),
        &FileOptions {
            size: Some(16 << 20),
            thin: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut c = LuConfig::new(0, Arc::new(be));
    c.thin = true;
    c.block_size = 4096;
    let s = server(vec![c]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    let r = run(&s, &n, 0, cdb::read_capacity16(32).as_bytes(), &[]).await;
    let rc = inq::ReadCapacity16::parse(&r.data_in).unwrap();
    assert!(rc.lbpme && rc.lbprz);
    // Nothing written yet: deallocated.
    let gls = |lba| {
        Command::GetLbaStatus {
            lba,
            alloc_len: 1024,
        }
        .encode()
    };
    let r = run(&s, &n, 0, gls(0).as_bytes(), &[]).await;
    let d = inq::parse_lba_status(&r.data_in).unwrap();
    assert_eq!(d[0], (0, 4096, inq::lba_status::DEALLOCATED));
    // Write 256 blocks (1 MiB) at LBA 512: mapped there.
    let data = vec![0x11u8; 256 * 4096];
    good(&run(&s, &n, 0, cdb::write16(512, 256, false).as_bytes(), &data).await);
    let r = run(&s, &n, 0, gls(512).as_bytes(), &[]).await;
    let d = inq::parse_lba_status(&r.data_in).unwrap();
    assert_eq!(d[0].0, 512);
    assert_eq!(d[0].2, inq::lba_status::MAPPED);
    assert!(d[0].1 >= 256);
    let r = run(&s, &n, 0, gls(0).as_bytes(), &[]).await;
    let d = inq::parse_lba_status(&r.data_in).unwrap();
    assert_eq!(d[0], (0, 512, inq::lba_status::DEALLOCATED));
    assert_eq!(d[1].0, 512);
    // UNMAP the first half: deallocated again, reads zero.
    let p = cdb::encode_unmap_params(&[(512, 128)]);
    good(&run(&s, &n, 0, cdb::unmap(p.len() as u16).as_bytes(), &p).await);
    let r = run(&s, &n, 0, gls(512).as_bytes(), &[]).await;
    let d = inq::parse_lba_status(&r.data_in).unwrap();
    assert_eq!(d[0], (512, 128, inq::lba_status::DEALLOCATED));
    let r = run(&s, &n, 0, cdb::read16(512, 1, false).as_bytes(), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0));
    // WRITE SAME with UNMAP over the rest.
    good(
        &run(
            &s,
            &n,
            0,
            cdb::write_same16(640, 128, true, false).as_bytes(),
            &[0u8; 4096],
        )
        .await,
    );
    let r = run(&s, &n, 0, gls(0).as_bytes(), &[]).await;
    let d = inq::parse_lba_status(&r.data_in).unwrap();
    assert_eq!(d[0], (0, 4096, inq::lba_status::DEALLOCATED));
    // WRITE SAME with a pattern; 0 blocks means through the end.
    good(
        &run(
            &s,
            &n,
            0,
            cdb::write_same16(4090, 0, false, false).as_bytes(),
            &[0x5Au8; 4096],
        )
        .await,
    );
    let r = run(&s, &n, 0, cdb::read16(4090, 6, false).as_bytes(), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0x5A));
    // Errors: beyond the end, bad Data-Out size, too many descriptors.
    let r = run(&s, &n, 0, gls(4096).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE);
    let r = run(
        &s,
        &n,
        0,
        cdb::write_same16(0, 1, false, false).as_bytes(),
        &[0u8; 2048],
    )
    .await;
    assert_eq!(r.status, 2);
    let p = cdb::encode_unmap_params(&[(4095, 2)]);
    let r = run(&s, &n, 0, cdb::unmap(p.len() as u16).as_bytes(), &p).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE);
    let r = run(&s, &n, 0, cdb::unmap(4).as_bytes(), &p[..4]).await;
    assert_sense(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::PARAMETER_LIST_LENGTH_ERROR,
    );
}

fn prout(sa: u8, t: u8, key: u64, sa_key: u64) -> (Vec<u8>, Vec<u8>) {
    let c = Command::PersistentReserveOut {
        service_action: sa,
        scope: 0,
        pr_type: t,
        param_len: 24,
    }
    .encode();
    let p = pr::ProutParams {
        key,
        sa_key,
        ..Default::default()
    }
    .encode();
    (c.as_bytes().to_vec(), p.to_vec())
}

#[tokio::test]
async fn persistent_reservations_through_execute() {
    let s = server(vec![mem_lu(0, 1024, 512)]);
    let (a, b) = (nx(1), nx(2));
    clear_ua(&s, &a, 0).await;
    clear_ua(&s, &b, 0).await;
    let (c, p) = prout(6, 0, 0, 0xA);
    good(&run(&s, &a, 0, &c, &p).await);
    let (c, p) = prout(6, 0, 0, 0xB);
    good(&run(&s, &b, 0, &c, &p).await);
    let (c, p) = prout(1, 3, 0xA, 0);
    good(&run(&s, &a, 0, &c, &p).await);
    // Exclusive access: b can neither read nor write, but INQUIRY works.
    assert_eq!(
        run(&s, &b, 0, &r10(0, 1), &[]).await.status,
        Status::RESERVATION_CONFLICT.0
    );
    good(&run(&s, &b, 0, cdb::inquiry(false, 0, 36).as_bytes(), &[]).await);
    good(&run(&s, &a, 0, &r10(0, 1), &[]).await);
    // READ RESERVATION shows the holder's key and type.
    let rr = Command::PersistentReserveIn {
        service_action: 1,
        alloc_len: 64,
    }
    .encode();
    let r = run(&s, &b, 0, rr.as_bytes(), &[]).await;
    assert_eq!(&r.data_in[8..16], &0xAu64.to_be_bytes());
    assert_eq!(r.data_in[21], 3);
    // b preempts a.
    let (c, p) = prout(4, 3, 0xB, 0xA);
    good(&run(&s, &b, 0, &c, &p).await);
    let r = run(&s, &a, 0, &r10(0, 1), &[]).await;
    assert_sense(&r, SenseKey::UNIT_ATTENTION, Asc::REGISTRATIONS_PREEMPTED);
    assert_eq!(
        run(&s, &a, 0, &r10(0, 1), &[]).await.status,
        Status::RESERVATION_CONFLICT.0
    );
    // READ KEYS / REPORT CAPABILITIES / READ FULL STATUS.
    let rk = Command::PersistentReserveIn {
        service_action: 0,
        alloc_len: 64,
    }
    .encode();
    let r = run(&s, &a, 0, rk.as_bytes(), &[]).await;
    assert_eq!(&r.data_in[4..8], &[0, 0, 0, 8]);
    for sa in [2u8, 3] {
        good(
            &run(
                &s,
                &a,
                0,
                Command::PersistentReserveIn {
                    service_action: sa,
                    alloc_len: 1024,
                }
                .encode()
                .as_bytes(),
                &[],
            )
            .await,
        );
    }
    let mut bad = Command::PersistentReserveIn {
        service_action: 0,
        alloc_len: 64,
    }
    .encode()
    .as_bytes()
    .to_vec();
    bad[1] = 4;
    assert_sense(
        &run(&s, &a, 0, &bad, &[]).await,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    // Wrong parameter list length.
    let c = Command::PersistentReserveOut {
        service_action: 0,
        scope: 0,
        pr_type: 0,
        param_len: 20,
    }
    .encode();
    let r = run(&s, &a, 0, c.as_bytes(), &[0u8; 20]).await;
    assert_sense(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::PARAMETER_LIST_LENGTH_ERROR,
    );
    // CLEAR by the holder.
    let (c, p) = prout(3, 0, 0xB, 0);
    good(&run(&s, &b, 0, &c, &p).await);
    good(&run(&s, &a, 0, &r10(0, 1), &[]).await);
}

#[tokio::test]
async fn reserve6_and_resets() {
    let s = server(vec![mem_lu(0, 1024, 512)]);
    let (a, b) = (nx(1), nx(2));
    clear_ua(&s, &a, 0).await;
    clear_ua(&s, &b, 0).await;
    let res = Command::Reserve6.encode();
    let rel = Command::Release6.encode();
    good(&run(&s, &a, 0, res.as_bytes(), &[]).await);
    good(&run(&s, &a, 0, res.as_bytes(), &[]).await);
    assert_eq!(
        run(&s, &b, 0, res.as_bytes(), &[]).await.status,
        Status::RESERVATION_CONFLICT.0
    );
    good(&run(&s, &b, 0, rel.as_bytes(), &[]).await);
    let ms = Command::ModeSense {
        size: CdbSize::Six,
        dbd: false,
        llbaa: false,
        pc: 0,
        page: 0x3F,
        subpage: 0,
        alloc_len: 255,
    };
    assert_eq!(
        run(&s, &b, 0, ms.encode().as_bytes(), &[]).await.status,
        Status::RESERVATION_CONFLICT.0
    );
    good(&run(&s, &a, 0, ms.encode().as_bytes(), &[]).await);
    // LUN reset releases it and raises 29h/00h.
    s.lun_reset(Lun::from_number(0).0, &a);
    let r = run(&s, &b, 0, res.as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::UNIT_ATTENTION,
        Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
    );
    good(&run(&s, &b, 0, res.as_bytes(), &[]).await);
    // Nexus loss releases it too.
    s.nexus_gone(&b);
    clear_ua(&s, &a, 0).await;
    good(&run(&s, &a, 0, res.as_bytes(), &[]).await);
    s.target_reset(&a, false);
    clear_ua(&s, &b, 0).await;
    good(&run(&s, &b, 0, res.as_bytes(), &[]).await);
}

#[tokio::test]
async fn report_supported_opcodes_matches_parser() {
    let s = server(vec![mem_lu(0, 1024, 512)]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    let all = Command::ReportSupportedOpcodes {
        rctd: false,
        options: 0,
        opcode: 0,
        service_action: 0,
        alloc_len: 65535,
    }
    .encode();
    let r = run(&s, &n, 0, all.as_bytes(), &[]).await;
    good(&r);
    let len = u32::from_be_bytes(r.data_in[..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, r.data_in.len());
    let descs: Vec<&[u8]> = r.data_in[4..].chunks(8).collect();
    assert!(descs.len() > 40);
    for d in descs {
        let (op, sa, servactv) = (d[0], u16::from_be_bytes([d[2], d[3]]), d[5] & 1 != 0);
        assert!(servactv || sa == 0);
        let one = Command::ReportSupportedOpcodes {
            rctd: false,
            options: if servactv { 2 } else { 1 },
            opcode: op,
            service_action: sa,
            alloc_len: 512,
        }
        .encode();
        let r = run(&s, &n, 0, one.as_bytes(), &[]).await;
        good(&r);
        assert_eq!(r.data_in[1] & 7, 3);
        let usage = &r.data_in[4..];
        assert_eq!(usage[0], op);
        // Setting any bit outside the usage mask is rejected by the parser.
        for (i, &m) in usage.iter().enumerate().skip(1) {
            if m != 0xFF {
                let mut c = vec![0u8; usage.len()];
                c[0] = op;
                if servactv {
                    c[1] = sa as u8;
                }
                let bit = 7 - (!m).leading_zeros() as u8;
                c[i] |= 1 << bit;
                assert!(
                    matches!(
                        Command::parse(&c),
                        Err(proto::scsi::CdbError::InvalidField { .. })
                    ),
                    "op {op:#x} byte {i} bit {bit}"
                );
            }
        }
        // Option 1 on a service-action opcode is invalid, and vice versa.
        let wrong = Command::ReportSupportedOpcodes {
            rctd: false,
            options: if servactv { 1 } else { 2 },
            opcode: op,
            service_action: sa,
            alloc_len: 512,
        }
        .encode();
        assert_sense(
            &run(&s, &n, 0, wrong.as_bytes(), &[]).await,
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_CDB,
        );
    }
    // READ(10) advertises DPO and FUA.
    let one = Command::ReportSupportedOpcodes {
        rctd: true,
        options: 1,
        opcode: 0x28,
        service_action: 0,
        alloc_len: 512,
    }
    .encode();
    let r = run(&s, &n, 0, one.as_bytes(), &[]).await;
    assert_eq!(r.data_in[5] & 0x18, 0x18);
    assert_eq!(r.data_in[1] & 0x80, 0x80);
    assert_eq!(r.data_in.len(), 4 + 10 + 12);
}

#[tokio::test]
async fn lun_changes_raise_unit_attentions() {
    let s = server(vec![mem_lu(0, 1024, 512)]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    s.add_lun(mem_lu(3, 100, 512)).unwrap();
    assert!(s.add_lun(mem_lu(3, 100, 512)).is_err());
    assert_eq!(s.luns(), vec![0, 3]);
    let r = run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::UNIT_ATTENTION,
        Asc::REPORTED_LUNS_DATA_HAS_CHANGED,
    );
    let r = run(&s, &n, 0, cdb::report_luns(256).as_bytes(), &[]).await;
    let (luns, _) = proto::scsi::lun::parse_report_luns(&r.data_in).unwrap();
    assert_eq!(luns, vec![Lun::from_number(0), Lun::from_number(3)]);
    s.resize(0, 2048 * 512).unwrap();
    let r = run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::UNIT_ATTENTION, Asc::CAPACITY_DATA_HAS_CHANGED);
    let r = run(&s, &n, 0, cdb::read_capacity16(32).as_bytes(), &[]).await;
    assert_eq!(
        inq::ReadCapacity16::parse(&r.data_in).unwrap().last_lba,
        2047
    );
    s.set_mode(0, IoMode::ReadOnly).unwrap();
    let r = run(&s, &n, 0, &w10(0, 1), &[0u8; 512]).await;
    assert_sense(&r, SenseKey::UNIT_ATTENTION, Asc::MODE_PARAMETERS_CHANGED);
    let r = run(&s, &n, 0, &w10(0, 1), &[0u8; 512]).await;
    assert_sense(&r, SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED);
    s.remove_lun(3).unwrap();
    let r = run(&s, &n, 3, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::LOGICAL_UNIT_NOT_SUPPORTED,
    );
    assert!(s.remove_lun(3).is_err());
}

#[tokio::test]
async fn removable_medium_eject_and_prevent() {
    let mut c = mem_lu(0, 1024, 512);
    c.removable = true;
    let s = server(vec![c]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    let ssu = |loej, start| {
        Command::StartStopUnit {
            immed: false,
            power_condition_modifier: 0,
            power_condition: 0,
            no_flush: false,
            loej,
            start,
        }
        .encode()
    };
    let pa = |p| Command::PreventAllowMediumRemoval { prevent: p }.encode();
    good(&run(&s, &n, 0, pa(1).as_bytes(), &[]).await);
    let r = run(&s, &n, 0, ssu(true, false).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::MEDIUM_REMOVAL_PREVENTED);
    good(&run(&s, &n, 0, pa(0).as_bytes(), &[]).await);
    good(&run(&s, &n, 0, ssu(true, false).as_bytes(), &[]).await);
    let r = run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::NOT_READY, Asc::MEDIUM_NOT_PRESENT);
    let r = run(&s, &n, 0, &r10(0, 1), &[]).await;
    assert_sense(&r, SenseKey::NOT_READY, Asc::MEDIUM_NOT_PRESENT);
    good(&run(&s, &n, 0, ssu(true, true).as_bytes(), &[]).await);
    good(&run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await);
    // Stop without LOEJ leaves the unit ready.
    good(&run(&s, &n, 0, ssu(false, false).as_bytes(), &[]).await);
    good(&run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await);
    // Prevention ends with the nexus.
    good(&run(&s, &n, 0, pa(1).as_bytes(), &[]).await);
    s.nexus_gone(&n);
    clear_ua(&s, &n, 0).await;
    good(&run(&s, &n, 0, ssu(true, false).as_bytes(), &[]).await);
}

#[tokio::test]
async fn sanitize_overwrite_and_block_erase() {
    let mut c = mem_lu(0, 256, 512);
    c.sanitize = true;
    let s = server(vec![c]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    good(&run(&s, &n, 0, &w10(3, 1), &[7u8; 512]).await);
    let ow = Command::Sanitize {
        immed: false,
        ause: false,
        service_action: 1,
        param_len: 8,
    }
    .encode();
    good(
        &run(
            &s,
            &n,
            0,
            ow.as_bytes(),
            &[0x01, 0, 0, 4, 0xDE, 0xAD, 0xBE, 0xEF],
        )
        .await,
    );
    let r = run(&s, &n, 0, &r10(255, 1), &[]).await;
    assert_eq!(&r.data_in[..4], &[0xDE, 0xAD, 0xBE, 0xEF]);
    let r = run(
        &s,
        &n,
        0,
        ow.as_bytes(),
        &[0x01, 0, 0, 5, 0xDE, 0xAD, 0xBE, 0xEF],
    )
    .await;
    assert_sense(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_PARAMETER_LIST,
    );
    let be = Command::Sanitize {
        immed: false,
        ause: false,
        service_action: 2,
        param_len: 0,
    }
    .encode();
    good(&run(&s, &n, 0, be.as_bytes(), &[]).await);
    let r = run(&s, &n, 0, &r10(3, 1), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0));
    let bad = Command::Sanitize {
        immed: false,
        ause: false,
        service_action: 5,
        param_len: 0,
    }
    .encode();
    assert_sense(
        &run(&s, &n, 0, bad.as_bytes(), &[]).await,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
}

#[test]
fn data_out_lengths() {
    let s = server(vec![mem_lu(0, 1024, 4096)]);
    let l = Lun::from_number(0).0;
    assert_eq!(
        s.data_out_length(l, cdb::write10(0, 2, false).as_bytes()),
        8192
    );
    assert_eq!(s.data_out_length(l, cdb::read10(0, 2, false).as_bytes()), 0);
    assert_eq!(s.data_out_length(l, &[0xC5, 0, 0, 0, 0, 0]), 0);
}

#[tokio::test]
async fn extended_copy_between_luns_and_results() {
    let s = server(vec![mem_lu(0, 1024, 512), mem_lu(1, 1024, 512)]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    good(&run(&s, &n, 0, &w10(0, 4), &[0x42u8; 2048]).await);
    // Target descriptors name LU 0 and LU 1 by their NAA designators.
    let naa = |lun: u64| s.lu(Lun::from_number(lun as u16).0).unwrap().naa;
    let mut p = vec![0u8; 16];
    p[0] = 9; // list id, LIST ID USAGE 00b: held
    for lun in [0, 1] {
        let mut d = vec![0u8; 32];
        d[0] = 0xE4;
        d[4..8].copy_from_slice(&[0x01, 0x03, 0x00, 16]);
        d[8..24].copy_from_slice(&naa(lun));
        d[29..32].copy_from_slice(&[0, 2, 0]);
        p.extend_from_slice(&d);
    }
    let mut seg = vec![0u8; 28];
    seg[0] = 0x02;
    seg[2..4].copy_from_slice(&24u16.to_be_bytes());
    seg[6..8].copy_from_slice(&1u16.to_be_bytes()); // destination: LU 1
    seg[10..12].copy_from_slice(&4u16.to_be_bytes());
    seg[20..28].copy_from_slice(&100u64.to_be_bytes());
    p.extend_from_slice(&seg);
    p[2..4].copy_from_slice(&64u16.to_be_bytes());
    p[8..12].copy_from_slice(&28u32.to_be_bytes());
    let xc = Command::ExtendedCopy {
        param_len: p.len() as u32,
    }
    .encode();
    good(&run(&s, &n, 0, xc.as_bytes(), &p).await);
    clear_ua(&s, &n, 1).await;
    let r = run(&s, &n, 1, &r10(100, 4), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0x42));
    let cs = Command::ReceiveCopyResults {
        service_action: 0,
        list_id: 9,
        alloc_len: 64,
    }
    .encode();
    let r = run(&s, &n, 0, cs.as_bytes(), &[]).await;
    good(&r);
    assert_eq!(
        (r.data_in[4], &r.data_in[8..12]),
        (1, &2048u32.to_be_bytes()[..])
    );
    // Unknown list id; results go with the nexus.
    let other = Command::ReceiveCopyResults {
        service_action: 0,
        list_id: 8,
        alloc_len: 64,
    }
    .encode();
    assert_sense(
        &run(&s, &n, 0, other.as_bytes(), &[]).await,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    s.nexus_gone(&n);
    assert_sense(
        &run(&s, &n, 0, cs.as_bytes(), &[]).await,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_CDB,
    );
    // Beyond the end of the destination: COPY ABORTED.
    p[16 + 64 + 20..16 + 64 + 28].copy_from_slice(&1022u64.to_be_bytes());
    let sd = sense(&run(&s, &n, 0, xc.as_bytes(), &p).await);
    assert_eq!(sd.key, SenseKey::COPY_ABORTED);
    // Unknown designator: unreachable copy target.
    p[16 + 8] ^= 0xFF;
    let sd = sense(&run(&s, &n, 0, xc.as_bytes(), &p).await);
    assert_eq!(
        (sd.key, sd.asc),
        (SenseKey::COPY_ABORTED, Asc::UNREACHABLE_COPY_TARGET)
    );
    let op = Command::ReceiveCopyResults {
        service_action: 3,
        list_id: 0,
        alloc_len: 256,
    }
    .encode();
    good(&run(&s, &n, 0, op.as_bytes(), &[]).await);
    let r = run(&s, &n, 0, cdb::inquiry(true, 0x8F, 255).as_bytes(), &[]).await;
    good(&r);
}

#[tokio::test]
async fn sanitize_in_progress_blocks_other_commands() {
    let mut c = mem_lu(0, 64 << 11, 512);
    c.sanitize = true;
    let s = server(vec![c]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    s.lu(0).unwrap().state().sanitizing = true;
    let r = run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::NOT_READY, Asc::SANITIZE_IN_PROGRESS);
    good(&run(&s, &n, 0, cdb::inquiry(false, 0, 96).as_bytes(), &[]).await);
    let rs = run(
        &s,
        &n,
        0,
        Command::RequestSense {
            desc: false,
            alloc_len: 18,
        }
        .encode()
        .as_bytes(),
        &[],
    )
    .await;
    assert_eq!(
        Sense::parse(&rs.data_in).unwrap().asc,
        Asc::SANITIZE_IN_PROGRESS
    );
    s.lu(0).unwrap().state().sanitizing = false;
    // IMMED: status at once, the erase finishes in the background.
    let be = Command::Sanitize {
        immed: true,
        ause: false,
        service_action: 2,
        param_len: 0,
    }
    .encode();
    good(&run(&s, &n, 0, be.as_bytes(), &[]).await);
    for _ in 0..200 {
        if run(&s, &n, 0, cdb::test_unit_ready().as_bytes(), &[])
            .await
            .status
            == 0
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("sanitize never finished");
}

/// Serial number and WWN depend only on the configured seeds, so a
/// restarted target (new server, same file) reports the same identities.
#[tokio::test]
async fn identities_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.img");
    let mk = || {
        let be = FileBackend::open(
            &path,
            &FileOptions {
                size: Some(1 << 20),
                ..Default::default()
            },
        )
        .unwrap();
        let mut c = LuConfig::new(0, Arc::new(be));
        c.serial_seed = format!("iqn.x:t/{}", path.display());
        c.wwn_seed = c.serial_seed.clone();
        server(vec![c])
    };
    let n = nx(1);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let s = mk();
        let a = run(&s, &n, 0, cdb::inquiry(true, 0x80, 255).as_bytes(), &[])
            .await
            .data_in;
        let b = run(&s, &n, 0, cdb::inquiry(true, 0x83, 255).as_bytes(), &[])
            .await
            .data_in;
        seen.push((a, b));
    }
    assert_eq!(seen[0], seen[1]);
}

fn rsoc_all() -> Vec<u8> {
    Command::ReportSupportedOpcodes {
        rctd: false,
        options: 0,
        opcode: 0,
        service_action: 0,
        alloc_len: 65535,
    }
    .encode()
    .as_bytes()
    .to_vec()
}

fn listed_opcodes(data: &[u8]) -> Vec<(u8, u16)> {
    data[4..]
        .chunks(8)
        .map(|d| (d[0], u16::from_be_bytes([d[2], d[3]])))
        .collect()
}

fn sanitize_cdb(service_action: u8, param_len: u16) -> Vec<u8> {
    Command::Sanitize {
        immed: false,
        ause: false,
        service_action,
        param_len,
    }
    .encode()
    .as_bytes()
    .to_vec()
}

/// SANITIZE is opt-in per LU: off, it is neither reported nor executed
/// (and the transport is told to expect no Data-Out for it); on, all four
/// service actions are reported and run.
#[tokio::test]
async fn sanitize_is_opt_in() {
    let mut on = mem_lu(1, 256, 512);
    on.sanitize = true;
    let s = server(vec![mem_lu(0, 256, 512), on]);
    let n = nx(1);
    clear_ua(&s, &n, 0).await;
    clear_ua(&s, &n, 1).await;
    assert!(!LuConfig::new(0, Arc::new(MemoryBackend::new(512))).sanitize);

    let r = run(&s, &n, 0, &rsoc_all(), &[]).await;
    good(&r);
    assert!(listed_opcodes(&r.data_in).iter().all(|&(op, _)| op != 0x48));
    let r = run(&s, &n, 1, &rsoc_all(), &[]).await;
    let sas: Vec<u16> = listed_opcodes(&r.data_in)
        .into_iter()
        .filter(|&(op, _)| op == 0x48)
        .map(|(_, sa)| sa)
        .collect();
    assert_eq!(sas, vec![0x01, 0x02, 0x03, 0x1F]);

    // Block Device Characteristics: WABEREQ/WACEREQ only with SANITIZE.
    for (lun, want) in [(0u16, 0u8), (1, 1)] {
        let r = run(&s, &n, lun, cdb::inquiry(true, 0xB1, 64).as_bytes(), &[]).await;
        good(&r);
        assert_eq!((r.data_in[7] >> 6, (r.data_in[7] >> 4) & 3), (want, want));
    }

    // One-command form: SUPPORT 001b (not supported) when off, 011b on.
    let one = Command::ReportSupportedOpcodes {
        rctd: false,
        options: 2,
        opcode: 0x48,
        service_action: 0x02,
        alloc_len: 512,
    }
    .encode();
    let r = run(&s, &n, 0, one.as_bytes(), &[]).await;
    good(&r);
    assert_eq!(r.data_in[1] & 7, 1);
    let r = run(&s, &n, 1, one.as_bytes(), &[]).await;
    assert_eq!(r.data_in[1] & 7, 3);

    // Off: INVALID COMMAND OPERATION CODE, and nothing is erased.
    good(&run(&s, &n, 0, &w10(9, 1), &[0x5Au8; 512]).await);
    for (sa, pl, data) in [
        (1u8, 8u16, vec![0x01, 0, 0, 4, 1, 2, 3, 4]),
        (2, 0, vec![]),
        (3, 0, vec![]),
        (0x1F, 0, vec![]),
    ] {
        let cdb = sanitize_cdb(sa, pl);
        assert_eq!(s.data_out_length(Lun::from_number(0).0, &cdb), 0);
        assert_eq!(
            s.data_out_length(Lun::from_number(1).0, &cdb),
            pl as u32,
            "service action {sa:#x}"
        );
        let r = run(&s, &n, 0, &cdb, &data).await;
        assert_sense(
            &r,
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_COMMAND_OPERATION_CODE,
        );
    }
    let r = run(&s, &n, 0, &r10(9, 1), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0x5A));

    // On: BLOCK ERASE zeroes the medium.
    good(&run(&s, &n, 1, &w10(9, 1), &[0x5Au8; 512]).await);
    good(&run(&s, &n, 1, &sanitize_cdb(2, 0), &[]).await);
    let r = run(&s, &n, 1, &r10(9, 1), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0));
}

/// A real file backend that counts writes not yet followed by a flush.
#[derive(Debug)]
struct FlushTracking {
    inner: FileBackend,
    unflushed_writes: std::sync::atomic::AtomicUsize,
    flushes: std::sync::atomic::AtomicUsize,
}

impl crate::backend::Backend for FlushTracking {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::backend::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> crate::backend::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.unflushed_writes.fetch_add(1, SeqCst);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> crate::backend::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.inner.flush()?;
        self.unflushed_writes.store(0, SeqCst);
        self.flushes.fetch_add(1, SeqCst);
        Ok(())
    }
    fn supports_unmap(&self) -> bool {
        self.inner.supports_unmap()
    }
    fn punch_hole(&self, offset: u64, len: u64) -> crate::backend::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.unflushed_writes.fetch_add(1, SeqCst);
        self.inner.punch_hole(offset, len)
    }
}

/// SANITIZE completes with GOOD only once the erase is on stable storage,
/// even on a write-back LU (WCE = 1) where plain writes are not flushed.
#[tokio::test]
async fn sanitize_flushes_before_status() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.img");
    for thin in [false, true] {
        let be = Arc::new(FlushTracking {
            inner: FileBackend::open(
                &path,
                &FileOptions {
                    size: Some(256 * 512),
                    thin,
                    ..Default::default()
                },
            )
            .unwrap(),
            unflushed_writes: Default::default(),
            flushes: Default::default(),
        });
        let mut c = LuConfig::new(0, be.clone());
        c.sanitize = true;
        c.thin = thin;
        assert_eq!(c.mode, IoMode::WriteBack);
        let s = server(vec![c]);
        let n = nx(1);
        clear_ua(&s, &n, 0).await;
        good(&run(&s, &n, 0, &w10(7, 1), &[0x11u8; 512]).await);
        // Write-back: the plain write is not flushed.
        assert!(be.unflushed_writes.load(SeqCst) > 0);
        let before = be.flushes.load(SeqCst);
        good(&run(&s, &n, 0, &sanitize_cdb(1, 6), &[0x01, 0, 0, 2, 0xC3, 0x3C]).await);
        assert_eq!(be.unflushed_writes.load(SeqCst), 0, "thin={thin}");
        assert!(be.flushes.load(SeqCst) > before);
        // The file itself holds the pattern everywhere.
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 256 * 512);
        assert!(on_disk.chunks(2).all(|p| p == [0xC3, 0x3C]));
        good(&run(&s, &n, 0, &w10(7, 1), &[0x11u8; 512]).await);
        good(&run(&s, &n, 0, &sanitize_cdb(2, 0), &[]).await);
        assert_eq!(be.unflushed_writes.load(SeqCst), 0, "thin={thin}");
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));
    }
}

fn mode_select_control(swp: bool, current: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let p = proto::scsi::mode::parse_mode_parameters(false, current).unwrap();
    let ctl = p.pages.iter().find(|(_, p)| p.page == 0x0A).unwrap();
    let mut page = ctl.1.clone();
    if swp {
        page.body[2] |= 0x08;
    } else {
        page.body[2] &= !0x08;
    }
    let mut list = vec![0, 0, 0, 0];
    page.encode_into(&mut list);
    let sel = Command::ModeSelect {
        size: CdbSize::Six,
        pf: true,
        sp: false,
        param_len: list.len() as u16,
    };
    (sel.encode().as_bytes().to_vec(), list)
}

/// SAM-5 §6.3.3: a logical unit reset establishes a unit attention for
/// every I_T nexus, the one that requested it included; a nexus that first
/// appears after the reset sees only its own power-on condition; SPC-2
/// reservations, prevention and changed mode parameters do not survive it.
#[tokio::test]
async fn lun_reset_reaches_every_nexus_and_restores_defaults() {
    let mut c = mem_lu(0, 1024, 512);
    c.removable = true;
    let s = server(vec![c, mem_lu(1, 64, 512)]);
    let (a, b) = (nx(1), nx(2));
    for n in [&a, &b] {
        clear_ua(&s, n, 0).await;
        clear_ua(&s, n, 1).await;
    }
    good(&run(&s, &a, 0, Command::Reserve6.encode().as_bytes(), &[]).await);
    let pa = |p| Command::PreventAllowMediumRemoval { prevent: p }.encode();
    good(&run(&s, &a, 0, pa(1).as_bytes(), &[]).await);
    // SWP on through MODE SELECT.
    let ms = Command::ModeSense {
        size: CdbSize::Six,
        dbd: true,
        llbaa: false,
        pc: 0,
        page: 0x0A,
        subpage: 0,
        alloc_len: 255,
    }
    .encode();
    let cur = run(&s, &a, 0, ms.as_bytes(), &[]).await.data_in;
    let (sel, list) = mode_select_control(true, &cur);
    good(&run(&s, &a, 0, &sel, &list).await);
    good(&run(&s, &a, 0, cdb::test_unit_ready().as_bytes(), &[]).await);

    s.lun_reset(Lun::from_number(0).0, &a);

    // Both nexuses, the issuer included, see exactly one reset UA.
    for n in [&a, &b] {
        let r = run(&s, n, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
        assert_sense(
            &r,
            SenseKey::UNIT_ATTENTION,
            Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
        );
    }
    // b also had MODE PARAMETERS CHANGED from a's MODE SELECT.
    let r = run(&s, &b, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::UNIT_ATTENTION, Asc::MODE_PARAMETERS_CHANGED);
    for n in [&a, &b] {
        good(&run(&s, n, 0, cdb::test_unit_ready().as_bytes(), &[]).await);
    }
    // The other LU was not reset.
    good(&run(&s, &b, 1, cdb::test_unit_ready().as_bytes(), &[]).await);

    // A nexus that first shows up after the reset: one power-on UA only.
    let c3 = nx(3);
    let r = run(&s, &c3, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::UNIT_ATTENTION,
        Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
    );
    good(&run(&s, &c3, 0, cdb::test_unit_ready().as_bytes(), &[]).await);

    // The reservation is gone, SWP is back to its default, prevention ended.
    good(&run(&s, &b, 0, Command::Reserve6.encode().as_bytes(), &[]).await);
    good(&run(&s, &b, 0, Command::Release6.encode().as_bytes(), &[]).await);
    let cur = run(&s, &a, 0, ms.as_bytes(), &[]).await.data_in;
    assert_eq!(cur[2] & 0x80, 0, "WP still reported");
    good(&run(&s, &a, 0, &w10(0, 1), &[1u8; 512]).await);
    let eject = Command::StartStopUnit {
        immed: false,
        power_condition_modifier: 0,
        power_condition: 0,
        no_flush: false,
        loej: true,
        start: false,
    }
    .encode();
    good(&run(&s, &a, 0, eject.as_bytes(), &[]).await);

    // A target reset reaches every nexus on every LU, issuer included.
    s.target_reset(&b, false);
    for n in [&a, &b] {
        for lun in [0, 1] {
            let r = run(&s, n, lun, cdb::test_unit_ready().as_bytes(), &[]).await;
            assert_sense(
                &r,
                SenseKey::UNIT_ATTENTION,
                Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
            );
        }
    }
}

/// The PreventAllow/StartStopUnit flows libiscsi runs against a removable
/// LU: eject refused while any nexus prevents removal, each nexus's
/// prevention ends with its nexus or a reset, load brings the medium back.
#[tokio::test]
async fn removable_prevention_per_nexus() {
    let mut c = mem_lu(0, 1024, 512);
    c.removable = true;
    let s = server(vec![c]);
    let (a, b) = (nx(1), nx(2));
    clear_ua(&s, &a, 0).await;
    clear_ua(&s, &b, 0).await;
    let r = run(&s, &a, 0, cdb::inquiry(false, 0, 96).as_bytes(), &[]).await;
    assert_eq!(r.data_in[1] & 0x80, 0x80, "RMB");
    let ssu = |loej, start| {
        Command::StartStopUnit {
            immed: false,
            power_condition_modifier: 0,
            power_condition: 0,
            no_flush: false,
            loej,
            start,
        }
        .encode()
    };
    let pa = |p| Command::PreventAllowMediumRemoval { prevent: p }.encode();
    good(&run(&s, &a, 0, pa(1).as_bytes(), &[]).await);
    good(&run(&s, &b, 0, pa(1).as_bytes(), &[]).await);
    good(&run(&s, &a, 0, pa(0).as_bytes(), &[]).await);
    // b still prevents.
    let r = run(&s, &a, 0, ssu(true, false).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::MEDIUM_REMOVAL_PREVENTED);
    s.nexus_gone(&b);
    good(&run(&s, &a, 0, ssu(true, false).as_bytes(), &[]).await);
    let r = run(&s, &a, 0, &r10(0, 1), &[]).await;
    assert_sense(&r, SenseKey::NOT_READY, Asc::MEDIUM_NOT_PRESENT);
    // Commands that need no medium still work.
    good(&run(&s, &a, 0, pa(1).as_bytes(), &[]).await);
    // Loading is refused while removal is prevented, then allowed.
    let r = run(&s, &a, 0, ssu(true, true).as_bytes(), &[]).await;
    assert_sense(&r, SenseKey::ILLEGAL_REQUEST, Asc::MEDIUM_REMOVAL_PREVENTED);
    s.lun_reset(Lun::from_number(0).0, &a);
    let r = run(&s, &a, 0, cdb::test_unit_ready().as_bytes(), &[]).await;
    assert_sense(
        &r,
        SenseKey::UNIT_ATTENTION,
        Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET,
    );
    good(&run(&s, &a, 0, ssu(true, true).as_bytes(), &[]).await);
    good(&run(&s, &a, 0, &r10(0, 1), &[]).await);
}
