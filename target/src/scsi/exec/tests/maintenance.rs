//! Unit attentions, resets, removable medium, START STOP UNIT and SANITIZE.

use super::*;

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
