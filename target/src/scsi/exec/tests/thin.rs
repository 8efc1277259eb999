//! Thin provisioning: WRITE SAME, UNMAP, GET LBA STATUS on a sparse file.

use super::*;

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
