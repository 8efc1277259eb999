//! Round trips, byte-exact layouts, reserved-bit rejection and fuzz-style
//! robustness of the CDB parser and builders.

use crate::scsi::cdb::*;

fn rt(c: Command) {
    let b = c.encode();
    assert_eq!(Command::parse(b.as_bytes()), Ok(c.clone()), "{b:?}");
    // Every built CDB must match its own usage mask.
    let spec = lookup(
        Opcode(b.as_bytes()[0]),
        Opcode(b.as_bytes()[0])
            .has_service_action()
            .then(|| (b.as_bytes()[1] & 0x1F) as u16),
    )
    .unwrap();
    assert_eq!(spec.usage.len(), b.as_bytes().len());
}

#[test]
fn round_trips() {
    let rw = Rw {
        lba: 0x1234,
        blocks: 7,
        dpo: true,
        fua: true,
        group: 3,
    };
    for size in [CdbSize::Ten, CdbSize::Twelve, CdbSize::Sixteen] {
        rt(Command::Read { size, rw });
        rt(Command::Write { size, rw });
        rt(Command::Verify {
            size,
            rw: Rw { fua: false, ..rw },
            bytchk: 1,
        });
        rt(Command::WriteAndVerify {
            size,
            rw: Rw { fua: false, ..rw },
            bytchk: 0,
        });
    }
    rt(Command::Read {
        size: CdbSize::Six,
        rw: Rw {
            lba: 0x1F_FFFF,
            blocks: 256,
            ..Rw::default()
        },
    });
    rt(Command::Write {
        size: CdbSize::Six,
        rw: Rw {
            lba: 5,
            blocks: 1,
            ..Rw::default()
        },
    });
    rt(Command::WriteSame {
        size: CdbSize::Sixteen,
        lba: 9,
        blocks: 100,
        unmap: true,
        ndob: true,
        group: 0,
    });
    rt(Command::WriteSame {
        size: CdbSize::Ten,
        lba: 9,
        blocks: 100,
        unmap: true,
        ndob: false,
        group: 1,
    });
    rt(Command::CompareAndWrite {
        rw: Rw {
            lba: u64::MAX,
            blocks: 1,
            dpo: false,
            fua: true,
            group: 0,
        },
    });
    rt(Command::OrWrite { rw });
    rt(Command::WriteAtomic {
        rw: Rw { blocks: 8, ..rw },
        boundary: 0,
    });
    rt(Command::Inquiry {
        evpd: true,
        page_code: 0x83,
        alloc_len: 255,
    });
    rt(Command::ReadCapacity16 { alloc_len: 32 });
    rt(Command::GetLbaStatus {
        lba: 77,
        alloc_len: 24,
    });
    rt(Command::ReportLuns {
        select_report: 2,
        alloc_len: 4096,
    });
    rt(Command::ModeSense {
        size: CdbSize::Six,
        dbd: true,
        llbaa: false,
        pc: 1,
        page: 0x3F,
        subpage: 0,
        alloc_len: 255,
    });
    rt(Command::ModeSense {
        size: CdbSize::Ten,
        dbd: false,
        llbaa: true,
        pc: 0,
        page: 8,
        subpage: 0,
        alloc_len: 1000,
    });
    rt(Command::ModeSelect {
        size: CdbSize::Ten,
        pf: true,
        sp: false,
        param_len: 28,
    });
    rt(Command::StartStopUnit {
        immed: true,
        power_condition_modifier: 0,
        power_condition: 0,
        no_flush: false,
        loej: true,
        start: false,
    });
    rt(Command::PersistentReserveOut {
        service_action: 1,
        scope: 0,
        pr_type: 3,
        param_len: 24,
    });
    rt(Command::PersistentReserveIn {
        service_action: 3,
        alloc_len: 8192,
    });
    rt(Command::ReportSupportedOpcodes {
        rctd: true,
        options: 2,
        opcode: 0x9E,
        service_action: 0x10,
        alloc_len: 512,
    });
    rt(Command::SynchronizeCache {
        size: CdbSize::Sixteen,
        lba: 0,
        blocks: 0,
        immed: true,
    });
    rt(Command::PreFetch {
        size: CdbSize::Ten,
        lba: 1,
        blocks: 2,
        immed: false,
    });
    rt(Command::Sanitize {
        immed: false,
        ause: true,
        service_action: 1,
        param_len: 8,
    });
    rt(Command::Unmap {
        param_len: 24,
        group: 0,
    });
    rt(Command::TestUnitReady);
    rt(Command::RequestSense {
        desc: true,
        alloc_len: 252,
    });
    rt(Command::ReadDefectData {
        size: CdbSize::Ten,
        req_plist: true,
        req_glist: false,
        format: 5,
        alloc_len: 32,
    });
}

#[test]
fn byte_exact_read16() {
    assert_eq!(
        read16(0x0102_0304_0506_0708, 0x10, true).as_bytes(),
        &[0x88, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0x10, 0, 0]
    );
    assert_eq!(
        write10(0xAABBCCDD, 2, false).as_bytes(),
        &[0x2A, 0, 0xAA, 0xBB, 0xCC, 0xDD, 0, 0, 2, 0]
    );
}

#[test]
fn reserved_bits_rejected_with_pointer() {
    // RDPROTECT = 1 on READ(10): byte 1 bit 5.
    let mut c = read10(0, 1, false);
    c.set_byte(1, 0x20);
    assert_eq!(
        Command::parse(c.as_bytes()),
        Err(CdbError::InvalidField {
            byte: 1,
            bit: Some(5)
        })
    );
    // NACA in the control byte.
    let mut c = read16(0, 1, false);
    c.set_byte(15, 0x04);
    assert_eq!(
        Command::parse(c.as_bytes()),
        Err(CdbError::InvalidField {
            byte: 15,
            bit: Some(2)
        })
    );
    // FUA_NV is accepted (obsolete, ignored).
    let mut c = read10(0, 1, false);
    c.set_byte(1, 0x02);
    assert!(Command::parse(c.as_bytes()).is_ok());
}

#[test]
fn unsupported_and_bad_service_action() {
    assert_eq!(
        Command::parse(&[0xC0, 0, 0, 0, 0, 0]),
        Err(CdbError::Unsupported(Opcode(0xC0)))
    );
    assert_eq!(Command::parse(&[]), Err(CdbError::Empty));
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x11;
    assert_eq!(
        Command::parse(&c),
        Err(CdbError::InvalidField {
            byte: 1,
            bit: Some(4)
        })
    );
    assert_eq!(
        Command::parse(&[0x28, 0, 0]),
        Err(CdbError::Truncated {
            opcode: Opcode::READ_10,
            len: 3
        })
    );
    let mut c = [0u8; 10];
    c[0] = 0x5E;
    c[1] = 0x04;
    assert!(matches!(
        Command::parse(&c),
        Err(CdbError::InvalidField { byte: 1, .. })
    ));
}

#[test]
fn parse_never_panics() {
    let mut seed = 99u32;
    for _ in 0..20000 {
        let len = (seed % 17) as usize;
        let cdb: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        if let Ok(cmd) = Command::parse(&cdb) {
            let _ = cmd.encode();
            let _ = cmd.data_out_length(512);
        }
        seed = seed.wrapping_add(1);
    }
    for op in 0..=255u8 {
        let mut c = [0u8; 16];
        c[0] = op;
        let _ = Command::parse(&c);
    }
}

#[test]
fn unmap_params() {
    let p = encode_unmap_params(&[(1, 2), (100, 8)]);
    assert_eq!(p.len(), 40);
    assert_eq!(parse_unmap_params(&p), Ok(vec![(1, 2), (100, 8)]));
    assert_eq!(parse_unmap_params(&p[..24]), Ok(vec![(1, 2)]));
    assert_eq!(parse_unmap_params(&[]), Ok(vec![]));
    let mut bad = p.clone();
    bad[3] = 15;
    assert_eq!(parse_unmap_params(&bad), Err(ParamError { byte: 2 }));
}

#[test]
fn data_out_lengths() {
    let c = Command::parse(write10(0, 4, false).as_bytes()).unwrap();
    assert_eq!(c.data_out_length(512), 2048);
    assert_eq!(
        Command::parse(write_same16(0, 100, false, false).as_bytes())
            .unwrap()
            .data_out_length(4096),
        4096
    );
    assert_eq!(
        Command::parse(write_same16(0, 100, false, true).as_bytes())
            .unwrap()
            .data_out_length(4096),
        0
    );
    assert_eq!(
        Command::CompareAndWrite {
            rw: Rw {
                blocks: 2,
                ..Rw::default()
            }
        }
        .data_out_length(512),
        2048
    );
}

mod unmap_limit_tests {
    use super::*;

    #[test]
    fn unmap_params_never_exceed_the_16_bit_length() {
        let ranges: Vec<(u64, u32)> = (0..5000u64).map(|i| (i * 8, 8)).collect();
        let p = encode_unmap_params(&ranges);
        assert_eq!(p.len(), 8 + 16 * MAX_UNMAP_DESCRIPTORS);
        let data_len = u16::from_be_bytes([p[0], p[1]]) as usize;
        assert_eq!(data_len + 2, p.len());
        let parsed = parse_unmap_params(&p).expect("parses back");
        assert_eq!(parsed.len(), MAX_UNMAP_DESCRIPTORS);
        assert_eq!(parsed[..], ranges[..MAX_UNMAP_DESCRIPTORS]);
    }
}
