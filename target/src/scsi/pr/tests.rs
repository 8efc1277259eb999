//! Unit tests of the persistent-reservation state machine.

use super::*;

fn nx(i: u8) -> Nexus {
    Nexus {
        initiator_port: format!("iqn.test:i{i},i,0x00023d00000{i}"),
        target_port: "iqn.test:t,t,0x1".into(),
        relative_target_port: 1,
    }
}

fn params(key: u64, sa_key: u64) -> ProutParams {
    ProutParams {
        key,
        sa_key,
        ..Default::default()
    }
}

use proto::scsi::cdb::sa;

fn reg(r: &mut Reservations, n: &Nexus, key: u64) {
    r.prout(
        n,
        sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY as u8,
        0,
        0,
        &params(0, key),
    )
    .unwrap();
}

/// SPC-5 table 63 for every type: (registered non-holder read, write,
/// unregistered read, write) allowed?
#[test]
fn access_table() {
    let cases = [
        (pr_type::EXCLUSIVE_ACCESS, [false, false, false, false]),
        (pr_type::WRITE_EXCLUSIVE, [true, false, true, false]),
        (
            pr_type::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
            [true, true, false, false],
        ),
        (
            pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
            [true, true, true, false],
        ),
        (
            pr_type::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
            [true, true, false, false],
        ),
        (
            pr_type::WRITE_EXCLUSIVE_ALL_REGISTRANTS,
            [true, true, true, false],
        ),
    ];
    for (t, expect) in cases {
        let mut r = Reservations::default();
        let (a, b, c) = (nx(1), nx(2), nx(3));
        reg(&mut r, &a, 1);
        reg(&mut r, &b, 2);
        r.prout(&a, sa::PROUT_RESERVE as u8, 0, t, &params(1, 0))
            .unwrap();
        assert!(!r.conflicts(&a, Access::Read) && !r.conflicts(&a, Access::Write));
        let got = [
            !r.conflicts(&b, Access::Read),
            !r.conflicts(&b, Access::Write),
            !r.conflicts(&c, Access::Read),
            !r.conflicts(&c, Access::Write),
        ];
        assert_eq!(got, expect, "type {t}");
        assert!(!r.conflicts(&c, Access::Always));
    }
}

#[test]
fn register_rules_and_generation() {
    let mut r = Reservations::default();
    let a = nx(1);
    // REGISTER with a non-zero key while unregistered: conflict.
    assert_eq!(
        r.prout(&a, 0, 0, 0, &params(5, 6)),
        Err(ProutError::Conflict)
    );
    r.prout(&a, 0, 0, 0, &params(0, 6)).unwrap();
    assert_eq!(r.generation, 1);
    // Wrong key.
    assert_eq!(
        r.prout(&a, 0, 0, 0, &params(7, 8)),
        Err(ProutError::Conflict)
    );
    r.prout(&a, 0, 0, 0, &params(6, 8)).unwrap();
    assert_eq!(r.read_keys()[8..16], 8u64.to_be_bytes());
    r.prout(&a, 0, 0, 0, &params(8, 0)).unwrap();
    assert!(r.registrations.is_empty());
    assert_eq!(r.generation, 3);
    assert_eq!(&r.read_keys()[4..8], &[0, 0, 0, 0]);
}

#[test]
fn ownership_on_unregister() {
    for t in [1u8, 3, 5, 6, 7, 8] {
        let mut r = Reservations::default();
        let (a, b) = (nx(1), nx(2));
        reg(&mut r, &a, 1);
        reg(&mut r, &b, 2);
        r.prout(&a, sa::PROUT_RESERVE as u8, 0, t, &params(1, 0))
            .unwrap();
        r.prout(&a, 0, 0, 0, &params(1, 0)).unwrap();
        assert_eq!(
            r.reservation.is_some(),
            pr_type::all_registrants(t),
            "type {t}"
        );
    }
}

#[test]
fn preempt_removes_registration_and_reports_ua() {
    let mut r = Reservations::default();
    let (a, b) = (nx(1), nx(2));
    reg(&mut r, &a, 1);
    reg(&mut r, &b, 2);
    let g = r.generation;
    let uas = r
        .prout(&b, sa::PROUT_PREEMPT as u8, 0, 3, &params(2, 1))
        .unwrap();
    assert_eq!(uas, vec![(a.clone(), Asc::REGISTRATIONS_PREEMPTED)]);
    assert_eq!(r.generation, g + 1);
    assert_eq!(r.registrations.len(), 1);
    assert_eq!(r.registrations[0].key, 2);
    // Preempt of a held reservation moves it.
    reg(&mut r, &a, 1);
    r.prout(&a, sa::PROUT_RESERVE as u8, 0, 3, &params(1, 0))
        .unwrap();
    r.prout(&b, sa::PROUT_PREEMPT as u8, 0, 1, &params(2, 1))
        .unwrap();
    assert!(r.is_holder(&b));
    assert!(!r.is_registered(&a));
}

#[test]
fn release_and_clear() {
    let mut r = Reservations::default();
    let (a, b) = (nx(1), nx(2));
    reg(&mut r, &a, 1);
    reg(&mut r, &b, 2);
    r.prout(&a, sa::PROUT_RESERVE as u8, 0, 5, &params(1, 0))
        .unwrap();
    // Reserve by another while held: conflict.
    assert_eq!(
        r.prout(&b, sa::PROUT_RESERVE as u8, 0, 5, &params(2, 0)),
        Err(ProutError::Conflict)
    );
    // Release with the wrong type.
    assert!(matches!(
        r.prout(&a, sa::PROUT_RELEASE as u8, 0, 3, &params(1, 0)),
        Err(ProutError::Check(_))
    ));
    let uas = r
        .prout(&a, sa::PROUT_RELEASE as u8, 0, 5, &params(1, 0))
        .unwrap();
    assert_eq!(uas, vec![(b.clone(), Asc::RESERVATIONS_RELEASED)]);
    r.prout(&a, sa::PROUT_RESERVE as u8, 0, 3, &params(1, 0))
        .unwrap();
    let uas = r
        .prout(&b, sa::PROUT_CLEAR as u8, 0, 0, &params(2, 0))
        .unwrap();
    assert_eq!(uas, vec![(a, Asc::RESERVATIONS_PREEMPTED)]);
    assert!(r.reservation.is_none() && r.registrations.is_empty());
    assert_eq!(&r.read_reservation()[4..8], &[0, 0, 0, 0]);
}

#[test]
fn legacy_reserve() {
    let mut r = Reservations::default();
    let (a, b) = (nx(1), nx(2));
    r.reserve_legacy(&a).unwrap();
    r.reserve_legacy(&a).unwrap();
    assert_eq!(r.reserve_legacy(&b), Err(ProutError::Conflict));
    assert!(r.legacy_conflicts(&b));
    assert!(!r.legacy_conflicts(&a));
    r.release_legacy(&b).unwrap();
    assert!(r.legacy.is_some());
    r.nexus_lost(&a);
    assert!(!r.legacy_conflicts(&b));
}

#[test]
fn params_round_trip() {
    let p = ProutParams {
        key: 1,
        sa_key: 2,
        aptpl: true,
        ..Default::default()
    };
    assert_eq!(ProutParams::parse(&p.encode()), Some(p));
    assert_eq!(ProutParams::parse(&[0; 23]), None);
}
