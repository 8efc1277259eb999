//! The initiator against a real, independent target: Debian's tgtd.

mod common;

use std::time::{Duration, Instant};

use common::*;
use initiator::session::ChapConfig;
use initiator::{device, discover, DiscoveryConfig, Error, ErrorKind, LoginFailure, Session};
use testbed::{Direction, Proxy, TgtdConfig};

#[tokio::test]
async fn discovery_lists_the_target() {
    let Some(t) = tgtd(TgtdConfig::default()) else {
        return;
    };
    let cfg = DiscoveryConfig::new(portal_of(t.addr()), INITIATOR);
    let found = discover(&cfg).await.expect("discovery");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, t.target_name());
    assert_eq!(found[0].portals, vec![(t.addr().to_string(), 1)]);
}

#[tokio::test]
async fn login_scan_io_and_logout() {
    let Some(t) = tgtd(TgtdConfig {
        lun_size: 16 << 20,
        ..TgtdConfig::default()
    }) else {
        return;
    };
    let s = Session::connect(config(t.addr(), t.target_name()))
        .await
        .expect("login");
    assert_ne!(s.tsih(), 0);
    let luns = device::scan_luns(&s).await.expect("scan");
    let disk = luns.iter().find(|l| l.number == Some(1)).expect("LUN 1");
    assert_eq!(disk.vendor, "IET");
    assert_eq!(disk.capacity.unwrap().bytes(), 16 << 20);
    let inq = device::inquiry(&s, proto::scsi::lun::Lun::from_number(1).to_u64())
        .await
        .unwrap();
    assert_eq!(inq.device_type, 0);
    let dev = initiator::ScsiDevice::open(&s, 1).await.unwrap();
    assert_eq!(dev.block_size(), 512);
    // Up to 2 MiB per I/O: beyond tgtd's MaxBurstLength, so the writes
    // use immediate/unsolicited data and then several R2T sequences.
    write_read_verify(&dev, 1, 6 << 20, 2 << 20).await;
    dev.flush().await.expect("SYNCHRONIZE CACHE");
    // The data is really on tgtd's backing file.
    let file = std::fs::read(t.backing_file()).unwrap();
    let got = dev.read(100, 8).await.unwrap();
    assert_eq!(&file[100 * 512..108 * 512], &got[..]);
    // A CHECK CONDITION becomes a typed error: READ beyond the end.
    let err = dev
        .raw(
            proto::scsi::cdb::read16(dev.blocks(), 1, false).as_bytes(),
            initiator::DataDirection::Read(512),
        )
        .await
        .unwrap();
    let e = err.into_result().unwrap_err();
    match e {
        Error::Scsi(se) => {
            assert_eq!(se.status, 2);
            assert_eq!(
                se.sense.unwrap().key,
                proto::scsi::sense::SenseKey::ILLEGAL_REQUEST
            );
        }
        other => panic!("expected a SCSI error, got {other:?}"),
    }
    s.logout().await.expect("logout");
}

#[tokio::test]
async fn chap_one_way_and_mutual() {
    let cfg = TgtdConfig {
        incoming: vec![("alice".into(), "alicesecret12".into())],
        outgoing: Some(("tgt".into(), "targetsecret12".into())),
        ..TgtdConfig::default()
    };
    let Some(t) = tgtd(cfg) else { return };
    // One-way.
    let mut c = config(t.addr(), t.target_name());
    c.chap = Some(ChapConfig {
        user: "alice".into(),
        secret: b"alicesecret12".to_vec(),
        ..Default::default()
    });
    let s = Session::connect(c.clone()).await.expect("CHAP login");
    device::read_capacity(&s, proto::scsi::lun::Lun::from_number(1).to_u64())
        .await
        .unwrap();
    s.logout().await.unwrap();
    // Mutual.
    c.chap.as_mut().unwrap().mutual = Some(("tgt".into(), b"targetsecret12".to_vec()));
    let s = Session::connect(c.clone())
        .await
        .expect("mutual CHAP login");
    s.logout().await.unwrap();
    // Mutual with the wrong target secret: we refuse the target.
    c.chap.as_mut().unwrap().mutual = Some(("tgt".into(), b"not-the-secret".to_vec()));
    let e = Session::connect(c.clone()).await.err().expect("must fail");
    assert!(matches!(e, Error::Login(LoginFailure::Auth(_))), "{e:?}");
    assert!(e.to_string().contains("authentication failed"), "{e}");
    // Wrong secret: the target refuses us.
    c.chap = Some(ChapConfig {
        user: "alice".into(),
        secret: b"wrongsecret!!".to_vec(),
        ..Default::default()
    });
    let e = Session::connect(c.clone()).await.err().expect("must fail");
    assert!(matches!(e, Error::LoginRefused { class: 2, .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::Failed);
    // No CHAP at all while the target requires it.
    c.chap = None;
    assert!(Session::connect(c).await.is_err());
    // tgtd authenticates discovery sessions only with discovery accounts
    // (none here): discovery without CHAP still lists the target.
    let d = DiscoveryConfig::new(portal_of(t.addr()), INITIATOR);
    assert_eq!(discover(&d).await.expect("discovery").len(), 1);
}

#[tokio::test]
async fn unknown_target_and_refused_connection() {
    let Some(t) = tgtd(TgtdConfig::default()) else {
        return;
    };
    let e = Session::connect(config(t.addr(), "iqn.2026-01.nope:missing"))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            Error::LoginRefused {
                class: 2,
                detail: 3,
                ..
            }
        ),
        "{e:?}"
    );
    let port = testbed::free_port().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let e = Session::connect(config(addr, t.target_name()))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e:?}");
}

#[tokio::test]
async fn connection_cuts_mid_io_are_recovered() {
    let Some(t) = tgtd(TgtdConfig {
        lun_size: 8 << 20,
        ..TgtdConfig::default()
    }) else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), t.addr())
        .await
        .unwrap();
    let (s, dev) = open_lun1(config(proxy.local_addr(), t.target_name())).await;
    let mut events = s.events();
    let tsih0 = s.tsih();
    // Cut while writing (client → target) and while reading (target → client).
    let p = &proxy;
    let cutter = async {
        // Arm a one-shot cut, wait until the initiator has reconnected
        // (a new connection reached the proxy), arm the next one.
        for i in 0..4u64 {
            let before = p.stats().accepted;
            let d = if i % 2 == 0 {
                Direction::ToServer
            } else {
                Direction::ToClient
            };
            p.cut_after(d, 100_000 + i * 50_001);
            let t0 = std::time::Instant::now();
            while p.stats().accepted == before && t0.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let work = write_read_verify(&dev, 7, 6 << 20, 1 << 20);
    tokio::pin!(work);
    // Stop arming cuts once the workload is done.
    tokio::select! {
        _ = &mut work => {}
        _ = cutter => work.await,
    }
    // Recovery happened (session reinstatement gives a new TSIH).
    let mut recovered = 0;
    while let Ok(ev) = events.try_recv() {
        if matches!(ev, initiator::SessionEvent::Recovered { .. }) {
            recovered += 1;
        }
    }
    assert!(recovered >= 1, "no recovery observed");
    assert!(proxy.stats().accepted >= 2);
    let _ = tsih0;
    // A one-shot cut that did not fire yet must not hit the logout.
    proxy.clear_faults();
    s.logout().await.unwrap();
}

#[tokio::test]
async fn target_that_stops_answering_fails_in_bounded_time() {
    let Some(t) = tgtd(TgtdConfig::default()) else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), t.addr())
        .await
        .unwrap();
    let mut c = config(proxy.local_addr(), t.target_name());
    c.nop_interval = Duration::from_millis(300);
    c.nop_timeout = Duration::from_secs(1);
    c.recovery_timeout = Duration::from_secs(2);
    c.login_timeout = Duration::from_secs(1);
    let (_s, dev) = open_lun1(c).await;
    proxy.set_blackhole(Direction::ToClient, true);
    let start = Instant::now();
    let e = dev.read(0, 8).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
