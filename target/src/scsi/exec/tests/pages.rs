//! INQUIRY/VPD, D_SENSE via MODE SELECT, REPORT SUPPORTED OPERATION CODES, identities.

use super::*;

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
