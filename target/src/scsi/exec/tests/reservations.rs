//! PERSISTENT RESERVE IN/OUT and SPC-2 RESERVE/RELEASE through execute.

use super::*;

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
