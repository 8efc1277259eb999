//! APTPL through the real binary: `iscsi target serve --config FILE` keeps
//! the persistent reservations of a LUN beside FILE while an initiator asked
//! for it (APTPL=1), and a fresh process started from the same file serves
//! them again; APTPL=0 drops them. Two initiators (the project's, with
//! different names and ISIDs) play the two cluster nodes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use initiator::session::{DataDirection, Session, SessionConfig};
use initiator::Portal;
use iscsi_target::scsi::pr::ProutParams;
use proto::scsi::cdb::{sa, Command as Cdb};
use testbed::ServerProcess;

const T: &str = "iqn.2024-01.org.example:cluster-disk";
const NODE1: &str = "iqn.1991-05.com.microsoft:node1";
const NODE2: &str = "iqn.1991-05.com.microsoft:node2";
const CONFLICT: u8 = 0x18;

const CONFIG: &str = r#"{
  "targets": [{
    "name": "iqn.2024-01.org.example:cluster-disk",
    "portal_groups": [{"tpgt": 1, "portals": ["127.0.0.1:0"]}],
    "luns": [{"lun": 0, "backend": "file", "path": "DISK", "size": "4M"}]
  }]
}"#;

fn serve(config: &Path) -> (ServerProcess, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iscsi"));
    cmd.args(["target", "serve", "--log", "warn", "--config"])
        .arg(config)
        .arg("--admin-socket")
        .arg(config.with_file_name("admin.sock"));
    let p = ServerProcess::spawn(cmd, "admin socket ", Duration::from_secs(10))
        .expect("iscsi target serve starts");
    let addr = p.stdout_values("listening on ").remove(0);
    (p, addr)
}

async fn node(addr: &str, name: &str, isid: u8) -> Session {
    let mut cfg = SessionConfig::new(Portal::parse(addr).unwrap(), T, name);
    cfg.isid = Some([0x80, 0, 0, 0, 0, isid]);
    cfg.recovery_timeout = Duration::ZERO;
    let s = Session::connect(cfg).await.expect("login");
    // Consume the power-on unit attention.
    let _ = s.execute(0, &[0u8; 6], DataDirection::None).await;
    s
}

async fn prout(s: &Session, action: u16, t: u8, key: u64, sa_key: u64, aptpl: bool) -> u8 {
    let p = ProutParams {
        key,
        sa_key,
        aptpl,
        ..Default::default()
    }
    .encode();
    let cdb = Cdb::PersistentReserveOut {
        service_action: action as u8,
        scope: 0,
        pr_type: t,
        param_len: 24,
    }
    .encode();
    let dir = DataDirection::Write(Bytes::copy_from_slice(&p));
    s.execute_raw(0, cdb.as_bytes(), dir).await.unwrap().status
}

async fn prin(s: &Session, action: u16) -> Vec<u8> {
    let cdb = Cdb::PersistentReserveIn {
        service_action: action as u8,
        alloc_len: 256,
    }
    .encode();
    let r = s
        .execute(0, cdb.as_bytes(), DataDirection::Read(256))
        .await
        .unwrap();
    assert_eq!(r.status, 0);
    r.data.to_vec()
}

async fn write(s: &Session) -> u8 {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2A;
    cdb[8] = 1;
    let data = DataDirection::Write(Bytes::from(vec![7u8; 512]));
    s.execute_raw(0, &cdb, data).await.unwrap().status
}

fn keys(d: &[u8]) -> Vec<u64> {
    d[8..]
        .chunks(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aptpl_survives_a_restart_of_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let config = dir.path().join("target.json");
    std::fs::write(&config, CONFIG.replace("DISK", disk.to_str().unwrap())).unwrap();
    let riek = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;

    let (mut p, addr) = serve(&config);
    let n1 = node(&addr, NODE1, 1).await;
    let n2 = node(&addr, NODE2, 2).await;
    assert_eq!(prout(&n1, riek, 0, 0, 0x1111, true).await, 0);
    assert_eq!(prout(&n2, riek, 0, 0, 0x2222, true).await, 0);
    assert_eq!(prout(&n1, sa::PROUT_RESERVE, 3, 0x1111, 0, false).await, 0);
    assert_eq!(write(&n2).await, CONFLICT);
    let state = dir.path().join("target.json.pr-state");
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        1,
        "state beside the config"
    );
    drop((n1, n2));
    p.terminate(Duration::from_secs(5)).unwrap();

    // A new process from the same configuration.
    let (mut p, addr) = serve(&config);
    let n1 = node(&addr, NODE1, 1).await;
    let n2 = node(&addr, NODE2, 2).await;
    assert_eq!(
        keys(&prin(&n2, sa::PRIN_READ_KEYS).await),
        vec![0x1111, 0x2222]
    );
    let r = prin(&n2, sa::PRIN_READ_RESERVATION).await;
    assert_eq!((&r[8..16], r[21]), (&0x1111u64.to_be_bytes()[..], 3));
    assert_eq!(write(&n2).await, CONFLICT, "the reservation binds again");
    assert_eq!(write(&n1).await, 0);
    // Node 2 takes over the way a failover does (PREEMPT), then turns
    // APTPL off with a REGISTER that keeps its key.
    assert_eq!(
        prout(&n2, sa::PROUT_PREEMPT, 3, 0x2222, 0x1111, false).await,
        0
    );
    assert_eq!(write(&n2).await, 0);
    assert_eq!(
        prout(&n2, sa::PROUT_REGISTER, 0, 0x2222, 0x2222, false).await,
        0
    );
    drop((n1, n2));
    p.terminate(Duration::from_secs(5)).unwrap();

    let (_p, addr) = serve(&config);
    let n1 = node(&addr, NODE1, 1).await;
    assert!(keys(&prin(&n1, sa::PRIN_READ_KEYS).await).is_empty());
    assert_eq!(write(&n1).await, 0, "no reservation after APTPL=0");
}

/// Quick-start flags: without `--pr-state-dir` the target has nowhere to
/// keep APTPL state and says so (PTPL_C = 0, APTPL=1 refused); with it,
/// the state lands in that directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pr_state_dir_flag_enables_aptpl() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("pr");
    for with_dir in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iscsi"));
        cmd.args(["target", "serve", "--log", "warn", "--target", T])
            .args(["--lun", "mem:1M", "--portal", "127.0.0.1:0"])
            .arg("--admin-socket")
            .arg(dir.path().join("admin.sock"));
        if with_dir {
            cmd.arg("--pr-state-dir").arg(&state);
        }
        let p = ServerProcess::spawn(cmd, "admin socket ", Duration::from_secs(10))
            .expect("iscsi target serve starts");
        let addr = p.stdout_values("listening on ").remove(0);
        let n1 = node(&addr, NODE1, 1).await;
        let caps = prin(&n1, sa::PRIN_REPORT_CAPABILITIES).await;
        assert_eq!(caps[2] & 1, u8::from(with_dir), "PTPL_C");
        let riek = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;
        let status = prout(&n1, riek, 0, 0, 0x1111, true).await;
        assert_eq!(
            status,
            if with_dir { 0 } else { 2 },
            "APTPL=1 with_dir={with_dir}"
        );
        assert_eq!(state.exists(), with_dir);
        drop(n1);
        drop(p);
    }
    let files: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, [format!("{T}.lun0.pr.json")]);
}
