//! The initiator library and CLI against our own target (`iscsi target
//! serve`): discovery, MC/S with 4 connections (spread asserted from the
//! initiator's per-connection counters), CHAP, and connection cuts.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use initiator::session::ChapConfig;
use initiator::{
    discover, DiscoveryConfig, Portal, ScsiDevice, Session, SessionConfig, SessionEvent,
};
use rand::{Rng, SeedableRng};
use testbed::{Direction, Proxy, ServerProcess, Unwritten, Verifier};

const BIN: &str = env!("CARGO_BIN_EXE_iscsi");
const TARGET: &str = "iqn.2026-01.rs.iscsi-rs:test-ours";
const INITIATOR: &str = "iqn.2026-01.rs.iscsi-rs:test-initiator";

fn serve(extra: &[&str]) -> ServerProcess {
    let mut c = Command::new(BIN);
    c.args([
        "target",
        "serve",
        "--portal",
        "127.0.0.1:0",
        "--target",
        TARGET,
        "--lun",
        "mem:16M",
        "--log",
        "warn",
    ]);
    c.args(extra);
    ServerProcess::spawn(c, "listening on", Duration::from_secs(10)).expect("target starts")
}

fn config(addr: SocketAddr) -> SessionConfig {
    let mut c = SessionConfig::new(Portal::parse(&addr.to_string()).unwrap(), TARGET, INITIATOR);
    c.connect_timeout = Duration::from_secs(2);
    c.login_timeout = Duration::from_secs(5);
    c.nop_interval = Duration::from_secs(1);
    c.nop_timeout = Duration::from_secs(3);
    c.recovery_timeout = Duration::from_secs(20);
    c
}

/// Concurrent random writes (some beyond MaxBurstLength), then read back.
async fn workload(dev: &ScsiDevice, seed: u64, total: usize, max_io: usize) {
    let bs = dev.block_size() as usize;
    let mut v = Verifier::new(seed, bs, dev.blocks() * bs as u64, Unwritten::Any);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut done = 0;
    let mut ranges = Vec::new();
    while done < total {
        let mut batch: Vec<(u64, u64, Vec<u8>)> = Vec::new();
        for _ in 0..8 {
            let n = rng.gen_range(1..=(max_io / bs) as u64);
            let lba = rng.gen_range(0..dev.blocks() - n);
            if batch.iter().any(|(l, m, _)| lba < l + m && *l < lba + n) {
                continue;
            }
            let data = v.write(lba * bs as u64, n as usize * bs);
            done += data.len();
            batch.push((lba, n, data));
        }
        let futs = batch
            .iter()
            .map(|(l, _, d)| dev.write(*l, d.clone().into(), false));
        for r in futures::future::join_all(futs).await {
            r.expect("write");
        }
        ranges.extend(batch.into_iter().map(|(l, n, _)| (l, n)));
    }
    let futs = ranges
        .iter()
        .map(|&(l, n)| async move { (l, dev.read(l, n as u32).await.expect("read")) });
    for (l, got) in futures::future::join_all(futs).await {
        v.check(l * bs as u64, &got)
            .unwrap_or_else(|m| panic!("mismatch at lba {l}: {m:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_mcs_with_four_connections() {
    let srv = serve(&[]);
    let addr = srv.addr().expect("address");
    let found = discover(&DiscoveryConfig::new(
        Portal::parse(&addr.to_string()).unwrap(),
        INITIATOR,
    ))
    .await
    .expect("discovery");
    assert!(found.iter().any(|t| t.name == TARGET), "{found:?}");

    let mut c = config(addr);
    c.connections = 4;
    let s = Session::connect(c).await.expect("MC/S login");
    assert_eq!(s.connection_count(), 4, "negotiated {:?}", s.negotiated());
    let dev = ScsiDevice::open(&s, 0).await.expect("LUN 0");
    workload(&dev, 11, 8 << 20, 1 << 20).await;
    let stats = s.stats();
    assert_eq!(stats.len(), 4);
    for st in &stats {
        assert!(
            st.commands >= 5,
            "connection {} carried only {} commands: {stats:?}",
            st.cid,
            st.commands
        );
        assert!(st.bytes_out > 0 && st.bytes_in > 0, "{stats:?}");
    }
    s.logout().await.expect("logout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chap_against_our_target() {
    let srv = serve(&[
        "--chap",
        "carol:carolsecret12",
        "--mutual-chap",
        "ours:targetsecret12",
    ]);
    let addr = srv.addr().unwrap();
    let mut c = config(addr);
    c.chap = Some(ChapConfig {
        user: "carol".into(),
        secret: b"carolsecret12".to_vec(),
        ..Default::default()
    });
    let s = Session::connect(c.clone()).await.expect("one-way CHAP");
    ScsiDevice::open(&s, 0).await.expect("LUN 0");
    s.logout().await.unwrap();
    c.chap.as_mut().unwrap().mutual = Some(("ours".into(), b"targetsecret12".to_vec()));
    let s = Session::connect(c.clone()).await.expect("mutual CHAP");
    s.logout().await.unwrap();
    c.chap.as_mut().unwrap().secret = b"wrong-secret".to_vec();
    let e = Session::connect(c)
        .await
        .err()
        .expect("wrong secret refused");
    assert!(
        matches!(
            e,
            initiator::Error::LoginRefused {
                class: 2,
                detail: 1,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_mid_io_against_our_target() {
    let srv = serve(&[]);
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), srv.addr().unwrap())
        .await
        .unwrap();
    let mut c = config(proxy.local_addr());
    c.connections = 2;
    let s = Session::connect(c).await.expect("login");
    let dev = ScsiDevice::open(&s, 0).await.unwrap();
    let mut ev = s.events();
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
    let work = workload(&dev, 5, 6 << 20, 1 << 20);
    tokio::pin!(work);
    // Stop arming cuts once the workload is done.
    tokio::select! {
        _ = &mut work => {}
        _ = cutter => work.await,
    }
    let mut recovered = 0;
    while let Ok(e) = ev.try_recv() {
        if matches!(e, SessionEvent::Recovered { .. }) {
            recovered += 1;
        }
    }
    assert!(recovered >= 1);
    // A one-shot cut that did not fire yet must not hit the logout.
    proxy.clear_faults();
    s.logout().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crc32c_digests_when_offered() {
    let srv = serve(&[]);
    let mut c = config(srv.addr().unwrap());
    c.offer.header_digest = true;
    c.offer.data_digest = true;
    let s = Session::connect(c).await.expect("login with digests");
    let n = s.negotiated();
    eprintln!("negotiated: {n:?}");
    assert!(n.header_digest && n.data_digest, "{n:?}");
    let dev = ScsiDevice::open(&s, 0).await.unwrap();
    workload(&dev, 3, 2 << 20, 512 << 10).await;
    s.logout().await.unwrap();
}

/// `--json` outputs share one shape: discover lists portal objects, and the
/// capacity object of `report-luns` is the one `readcap` prints.
#[test]
fn json_outputs_are_consistent() {
    let t = serve(&[]);
    let portal = t.addr().expect("address").to_string();
    let run = |args: &[&str]| {
        let o = Command::new(BIN)
            .args(args)
            .env(
                "ISCSI_STATE_DIR",
                std::env::temp_dir().join("iscsi-rs-cli-tests/state"),
            )
            .output()
            .expect("run iscsi");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {:?}", o.stdout))
    };
    let common = ["--initiator-name", INITIATOR, "--timeout", "5", "--json"];
    let mut a = vec!["discover", "--portal", &portal];
    a.extend_from_slice(&common);
    let d = run(&a);
    assert_eq!(d[0]["name"], TARGET);
    assert_eq!(d[0]["portals"][0]["address"], portal.as_str());
    assert_eq!(d[0]["portals"][0]["tpgt"], 1);
    let scsi = |op: &[&str]| {
        let mut a = vec!["scsi", "--portal", &portal, "--target", TARGET];
        a.extend_from_slice(&common);
        a.extend_from_slice(op);
        run(&a)
    };
    let cap = scsi(&["readcap"]);
    assert_eq!(cap["bytes"], 16 << 20);
    let luns = scsi(&["report-luns"]);
    assert_eq!(luns[0]["lun"], 0);
    assert_eq!(luns[0]["device_type_name"], "disk");
    assert_eq!(luns[0]["capacity"], cap, "same capacity object as readcap");
    assert_eq!(scsi(&["tur"])["ready"], true);
    assert_eq!(scsi(&["vpd", "0x80"])["page"], 0x80);
    assert_eq!(scsi(&["inquiry"])["device_type"], 0);
}
