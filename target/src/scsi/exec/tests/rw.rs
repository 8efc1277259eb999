//! READ/WRITE, write protection, COMPARE AND WRITE and Data-Out lengths.

use super::*;

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
    // Short Data-Out (scsi::transfer): whole blocks received are written,
    // a partial block refuses the command and writes nothing.
    good(&run(s, &n, 0, &w10(20, 2), &vec![0u8; 2 * bs]).await);
    good(&run(s, &n, 0, &w10(20, 2), &data[..bs]).await);
    let r = run(s, &n, 0, &r10(20, 2), &[]).await;
    assert_eq!(&r.data_in[..bs], &data[..bs]);
    assert!(r.data_in[bs..].iter().all(|&b| b == 0));
    let r = run(s, &n, 0, &w10(22, 1), &data[..bs / 2]).await;
    assert_sense(
        &r,
        SenseKey::ILLEGAL_REQUEST,
        Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
    );
    let r = run(s, &n, 0, &r10(22, 1), &[]).await;
    assert!(r.data_in.iter().all(|&b| b == 0), "nothing written");
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
