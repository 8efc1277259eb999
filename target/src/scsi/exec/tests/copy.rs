//! EXTENDED COPY and RECEIVE COPY RESULTS between LUNs.

use super::*;

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
