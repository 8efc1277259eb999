//! Persistent reservations seen by scripted initiators (issue 10 item 4:
//! what Windows failover clustering and multipath stacks need):
//! REGISTER AND MOVE between two I_T nexuses (different initiator names
//! and ISIDs), its refusals with the sense SPC-5 asks for, and APTPL: the
//! registrations and reservation of a LU survive a restart of the target
//! against the same state directory, and APTPL = 0 drops them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::Conn;
use iscsi_target::admin;
use iscsi_target::config::SessionLimits;
use iscsi_target::config_file;
use iscsi_target::scsi::pr::moving::MoveParams;
use iscsi_target::scsi::pr::{transport_id, ProutParams};
use iscsi_target::server::Server;
use proto::scsi::cdb::{sa, Command};
use proto::scsi::{Asc, Sense, SenseKey};

const T: &str = "iqn.2024-01.org.example:pr";
const A: &str = "iqn.2024-01.org.example:node-a";
const B: &str = "iqn.2024-01.org.example:node-b";
const C: &str = "iqn.2024-01.org.example:node-c";
const CONFLICT: u8 = 0x18;

fn port(name: &str, isid: u8) -> String {
    let i = common::isid(isid).0;
    let hex: String = i.iter().map(|b| format!("{b:02x}")).collect();
    format!("{name},i,0x{hex}")
}

async fn login(addr: SocketAddr, name: &str, isid: u8) -> Conn {
    let mut c = Conn::login_with(addr, Some(T), common::isid(isid), 0, 1, |cfg| {
        cfg.initiator_name = name.into()
    })
    .await
    .expect("login");
    c.clear_unit_attention().await.unwrap();
    c
}

async fn prout(c: &mut Conn, action: u16, t: u8, params: &[u8]) -> common::CmdResult {
    let cdb = Command::PersistentReserveOut {
        service_action: action as u8,
        scope: 0,
        pr_type: t,
        param_len: params.len() as u32,
    }
    .encode();
    c.command(0, cdb.as_bytes(), params, 0).await.unwrap()
}

fn basic(key: u64, sa_key: u64, aptpl: bool) -> Vec<u8> {
    ProutParams {
        key,
        sa_key,
        aptpl,
        ..Default::default()
    }
    .encode()
    .to_vec()
}

fn moving(key: u64, sa_key: u64, unreg: bool, to: &str, rtpi: u16) -> Vec<u8> {
    MoveParams {
        key,
        sa_key,
        unreg,
        aptpl: false,
        relative_target_port: rtpi,
        transport_id: transport_id::encode(to),
    }
    .encode()
}

async fn prin(c: &mut Conn, action: u16) -> Vec<u8> {
    let cdb = Command::PersistentReserveIn {
        service_action: action as u8,
        alloc_len: 1024,
    }
    .encode();
    let r = c.command(0, cdb.as_bytes(), &[], 1024).await.unwrap();
    assert_eq!(r.status, 0, "PRIN {action}: {r:?}");
    r.data
}

fn keys(data: &[u8]) -> Vec<u64> {
    data[8..]
        .chunks(8)
        .map(|k| u64::from_be_bytes(k.try_into().unwrap()))
        .collect()
}

/// (key, type) of the reservation, if any.
fn reservation(data: &[u8]) -> Option<(u64, u8)> {
    (data[7] != 0).then(|| {
        (
            u64::from_be_bytes(data[8..16].try_into().unwrap()),
            data[21],
        )
    })
}

async fn write(c: &mut Conn) -> u8 {
    c.write10(0, &[0x5a; 512]).await.unwrap().status
}

fn sense(r: &common::CmdResult) -> Sense {
    assert_eq!(r.status, 2, "CHECK CONDITION expected: {r:?}");
    Sense::parse(r.sense.as_deref().unwrap()).unwrap()
}

fn assert_param_field(r: &common::CmdResult, byte: u16) {
    let s = sense(r);
    assert_eq!(
        (s.key, s.asc),
        (
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_PARAMETER_LIST
        ),
        "{s:?}"
    );
    match s.sense_key_specific {
        Some(proto::scsi::sense::SenseKeySpecific::FieldPointer { cdb, field, .. }) => {
            assert!(!cdb, "points into the parameter list");
            assert_eq!(field, byte, "{s:?}");
        }
        other => panic!("no field pointer: {other:?}"),
    }
}

async fn server() -> (Server, SocketAddr) {
    let s = common::start_server(T, &["mem:1M"], SessionLimits::default()).await;
    let addr = s.local_addrs()[0];
    (s, addr)
}

/// A and B register; A reserves EXCLUSIVE ACCESS and moves it to B's
/// I_T nexus: B may now write, A may not; with UNREG A's key is gone too.
#[tokio::test]
async fn register_and_move_hands_the_reservation_over() {
    for unreg in [false, true] {
        let (s, addr) = server().await;
        let mut a = login(addr, A, 1).await;
        let mut b = login(addr, B, 2).await;
        let riek = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;
        assert_eq!(
            prout(&mut a, riek, 0, &basic(0, 0xA, false)).await.status,
            0
        );
        assert_eq!(
            prout(&mut b, riek, 0, &basic(0, 0xB, false)).await.status,
            0
        );
        assert_eq!(
            prout(&mut a, sa::PROUT_RESERVE, 3, &basic(0xA, 0, false))
                .await
                .status,
            0
        );
        assert_eq!(write(&mut b).await, CONFLICT);
        let gen = u32::from_be_bytes(
            prin(&mut a, sa::PRIN_READ_KEYS).await[..4]
                .try_into()
                .unwrap(),
        );

        let r = prout(
            &mut a,
            sa::PROUT_REGISTER_AND_MOVE,
            0,
            &moving(0xA, 0xB2, unreg, &port(B, 2), 1),
        )
        .await;
        assert_eq!(r.status, 0, "REGISTER AND MOVE: {r:?}");
        assert_eq!(write(&mut b).await, 0, "B holds the reservation now");
        assert_eq!(write(&mut a).await, CONFLICT, "A lost it");
        assert_eq!(
            reservation(&prin(&mut a, sa::PRIN_READ_RESERVATION).await),
            Some((0xB2, 3))
        );
        let k = prin(&mut b, sa::PRIN_READ_KEYS).await;
        assert_eq!(u32::from_be_bytes(k[..4].try_into().unwrap()), gen + 1);
        let want: Vec<u64> = if unreg { vec![0xB2] } else { vec![0xA, 0xB2] };
        assert_eq!(keys(&k), want, "unreg={unreg}");
        // The old holder cannot move it back.
        let back = moving(0xA, 0xA, false, &port(A, 1), 1);
        let r = prout(&mut a, sa::PROUT_REGISTER_AND_MOVE, 0, &back).await;
        assert_eq!(r.status, CONFLICT);
        s.shutdown_with_grace(Duration::from_millis(50)).await;
    }
}

/// The destination need not be logged in: C (never seen) gets the
/// registration and the reservation, and holds it when it logs in with
/// that name and ISID (written in upper case in the TransportID).
#[tokio::test]
async fn register_and_move_to_an_initiator_not_yet_logged_in() {
    let (s, addr) = server().await;
    let mut a = login(addr, A, 1).await;
    let riek = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;
    assert_eq!(
        prout(&mut a, riek, 0, &basic(0, 0xA, false)).await.status,
        0
    );
    assert_eq!(
        prout(&mut a, sa::PROUT_RESERVE, 1, &basic(0xA, 0, false))
            .await
            .status,
        0
    );
    let to = port(C, 3).to_ascii_uppercase().replace(",I,0X", ",i,0x");
    let r = prout(
        &mut a,
        sa::PROUT_REGISTER_AND_MOVE,
        0,
        &moving(0xA, 0xC, true, &to, 1),
    )
    .await;
    assert_eq!(r.status, 0, "{r:?}");
    let mut c = login(addr, C, 3).await;
    assert_eq!(write(&mut c).await, 0);
    assert_eq!(
        write(&mut a).await,
        CONFLICT,
        "write exclusive, A unregistered"
    );
    assert_eq!(keys(&prin(&mut c, sa::PRIN_READ_KEYS).await), vec![0xC]);
    s.shutdown_with_grace(Duration::from_millis(50)).await;
}

/// Every refusal SPC-5 lists, with its sense; none changes the state.
#[tokio::test]
async fn invalid_moves_are_refused_with_the_right_sense() {
    let (s, addr) = server().await;
    let mut a = login(addr, A, 1).await;
    let mut b = login(addr, B, 2).await;
    let mv = sa::PROUT_REGISTER_AND_MOVE;
    let riek = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;
    assert_eq!(
        prout(&mut a, riek, 0, &basic(0, 0xA, false)).await.status,
        0
    );
    assert_eq!(
        prout(&mut b, riek, 0, &basic(0, 0xB, false)).await.status,
        0
    );
    // No reservation yet: INVALID FIELD IN CDB.
    let s0 = sense(&prout(&mut a, mv, 0, &moving(0xA, 0xB, false, &port(B, 2), 1)).await);
    assert_eq!(
        (s0.key, s0.asc),
        (SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
    );
    assert_eq!(
        prout(&mut a, sa::PROUT_RESERVE, 3, &basic(0xA, 0, false))
            .await
            .status,
        0
    );
    let before = prin(&mut a, sa::PRIN_READ_FULL_STATUS).await;

    // Not the holder; wrong key; an unregistered nexus.
    let to_a = moving(0xB, 0xA, false, &port(A, 1), 1);
    assert_eq!(prout(&mut b, mv, 0, &to_a).await.status, CONFLICT);
    let wrong_key = moving(0xB, 0x1, false, &port(B, 2), 1);
    assert_eq!(prout(&mut a, mv, 0, &wrong_key).await.status, CONFLICT);
    let mut c = login(addr, C, 3).await;
    assert_eq!(
        prout(&mut c, mv, 0, &moving(0, 1, false, &port(B, 2), 1))
            .await
            .status,
        CONFLICT
    );
    // SERVICE ACTION RESERVATION KEY zero.
    assert_param_field(
        &prout(&mut a, mv, 0, &moving(0xA, 0, false, &port(B, 2), 1)).await,
        8,
    );
    // Destination == source (the name in another case is the same name).
    let me = port(A, 1).to_ascii_uppercase().replace(",I,0X", ",i,0x");
    assert_param_field(
        &prout(&mut a, mv, 0, &moving(0xA, 1, false, &me, 1)).await,
        24,
    );
    // A relative target port this target does not have.
    assert_param_field(
        &prout(&mut a, mv, 0, &moving(0xA, 1, false, &port(B, 2), 7)).await,
        18,
    );
    // TransportID format 00b (a device name, no ISID) and a bad ISID.
    let mut device = moving(0xA, 1, false, &port(B, 2), 1);
    device[24] = 0x05;
    assert_param_field(&prout(&mut a, mv, 0, &device).await, 24);
    let short_isid = moving(0xA, 1, false, &format!("{B},i,0x8012"), 1);
    assert_param_field(
        &prout(&mut a, mv, 0, &short_isid).await,
        24 + 4 + B.len() as u16 + 5,
    );
    // A TransportID longer than the parameter list: PARAMETER LIST LENGTH ERROR.
    let mut truncated = moving(0xA, 1, false, &port(B, 2), 1);
    truncated.truncate(truncated.len() - 4);
    let s1 = sense(&prout(&mut a, mv, 0, &truncated).await);
    assert_eq!(s1.asc, Asc::PARAMETER_LIST_LENGTH_ERROR);
    // APTPL = 1 on a target without a state directory: not supported.
    let mut aptpl = moving(0xA, 1, false, &port(B, 2), 1);
    aptpl[17] |= 1;
    assert_param_field(&prout(&mut a, mv, 0, &aptpl).await, 17);
    assert_param_field(
        &prout(&mut b, sa::PROUT_REGISTER, 0, &basic(0xB, 0xB, true)).await,
        20,
    );
    assert_eq!(
        prin(&mut a, sa::PRIN_READ_FULL_STATUS).await,
        before,
        "nothing changed"
    );
    assert_eq!(
        prin(&mut a, sa::PRIN_REPORT_CAPABILITIES).await[2] & 1,
        0,
        "PTPL_C = 0"
    );
    // An all-registrants reservation cannot be moved.
    assert_eq!(
        prout(&mut a, sa::PROUT_RELEASE, 3, &basic(0xA, 0, false))
            .await
            .status,
        0
    );
    assert_eq!(
        prout(&mut a, sa::PROUT_RESERVE, 8, &basic(0xA, 0, false))
            .await
            .status,
        0
    );
    assert_eq!(
        prout(&mut a, mv, 0, &moving(0xA, 1, false, &port(B, 2), 1))
            .await
            .status,
        CONFLICT
    );
    s.shutdown_with_grace(Duration::from_millis(50)).await;
}

/// REPORT SUPPORTED OPERATION CODES lists 5Fh/07h as supported, and the
/// other PROUT service actions as before.
#[tokio::test]
async fn register_and_move_is_reported_as_supported() {
    let (s, addr) = server().await;
    let mut a = login(addr, A, 1).await;
    for action in [
        sa::PROUT_REGISTER_AND_MOVE,
        sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY,
    ] {
        // MAINTENANCE IN / REPORT SUPPORTED OPERATION CODES, option 010b.
        let mut cdb = [0u8; 12];
        cdb[0] = 0xA3;
        cdb[1] = 0x0C;
        cdb[2] = 0x02;
        cdb[3] = 0x5F;
        cdb[4..6].copy_from_slice(&action.to_be_bytes());
        cdb[6..10].copy_from_slice(&64u32.to_be_bytes());
        let r = a.command(0, &cdb, &[], 64).await.unwrap();
        assert_eq!(r.status, 0, "{r:?}");
        assert_eq!(
            r.data[1] & 0x07,
            0x03,
            "SUPPORT: supported, as the standard says"
        );
    }
    s.shutdown_with_grace(Duration::from_millis(50)).await;
}

// ----- APTPL ---------------------------------------------------------------

const CONFIG: &str = r#"{
  "targets": [{
    "name": "iqn.2024-01.org.example:pr",
    "portal_groups": [{"tpgt": 1, "portals": ["127.0.0.1:0"]}],
    "luns": [{"lun": 0, "backend": "mem", "size": "1M"}]
  }]
}"#;

/// The target as `iscsi target serve --pr-state-dir DIR` runs it: loaded
/// from a config, launched through the admin layer.
async fn launch(state: &Path) -> Result<(Server, SocketAddr), String> {
    let mut loaded = config_file::parse_str(CONFIG).unwrap();
    loaded.ext.pr_state_dir = Some(state.to_path_buf());
    let (s, _admin) = admin::launch(loaded, None)
        .await
        .map_err(|e| e.to_string())?;
    let addr = s.local_addrs()[0];
    Ok((s, addr))
}

#[tokio::test]
async fn aptpl_state_survives_a_restart_and_aptpl_0_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("pr");
    let (s, addr) = launch(&state).await.unwrap();
    let mut a = login(addr, A, 1).await;
    let mut b = login(addr, B, 2).await;
    let caps = prin(&mut a, sa::PRIN_REPORT_CAPABILITIES).await;
    assert_eq!((caps[2] & 1, caps[3] & 1), (1, 0), "PTPL_C, not yet PTPL_A");
    let riek = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;
    assert_eq!(prout(&mut a, riek, 0, &basic(0, 0xA, true)).await.status, 0);
    assert_eq!(prout(&mut b, riek, 0, &basic(0, 0xB, true)).await.status, 0);
    assert_eq!(
        prout(&mut a, sa::PROUT_RESERVE, 5, &basic(0xA, 0, false))
            .await
            .status,
        0
    );
    let caps = prin(&mut a, sa::PRIN_REPORT_CAPABILITIES).await;
    assert_eq!(caps[3] & 1, 1, "PTPL_A");
    let files: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
    assert_eq!(
        files.len(),
        1,
        "one file for the LU, no temporary left: {files:?}"
    );
    drop((a, b));
    s.shutdown_with_grace(Duration::from_millis(50)).await;

    // Restart: keys and reservation are back, and they bind.
    let (s, addr) = launch(&state).await.unwrap();
    let mut a = login(addr, A, 1).await;
    let mut b = login(addr, B, 2).await;
    let mut c = login(addr, C, 3).await;
    assert_eq!(
        keys(&prin(&mut c, sa::PRIN_READ_KEYS).await),
        vec![0xA, 0xB]
    );
    assert_eq!(
        reservation(&prin(&mut c, sa::PRIN_READ_RESERVATION).await),
        Some((0xA, 5))
    );
    assert_eq!(
        prin(&mut c, sa::PRIN_REPORT_CAPABILITIES).await[3] & 1,
        1,
        "PTPL_A"
    );
    assert_eq!(
        write(&mut c).await,
        CONFLICT,
        "unregistered: write exclusive RO"
    );
    assert_eq!(write(&mut b).await, 0, "registrant");
    assert_eq!(write(&mut a).await, 0, "holder");
    // A restored holder can still move its reservation (and the move persists).
    let r = prout(
        &mut a,
        sa::PROUT_REGISTER_AND_MOVE,
        0,
        &moving(0xA, 0xB2, false, &port(B, 2), 1),
    )
    .await;
    assert_eq!(r.status, 0, "{r:?}");
    // APTPL = 0 in a REGISTER: the next restart forgets everything.
    assert_eq!(
        prout(&mut a, sa::PROUT_REGISTER, 0, &basic(0xA, 0xA, false))
            .await
            .status,
        0
    );
    assert_eq!(prin(&mut a, sa::PRIN_REPORT_CAPABILITIES).await[3] & 1, 0);
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "state file removed"
    );
    drop((a, b, c));
    s.shutdown_with_grace(Duration::from_millis(50)).await;

    let (s, addr) = launch(&state).await.unwrap();
    let mut a = login(addr, A, 1).await;
    assert!(keys(&prin(&mut a, sa::PRIN_READ_KEYS).await).is_empty());
    assert_eq!(
        reservation(&prin(&mut a, sa::PRIN_READ_RESERVATION).await),
        None
    );
    assert_eq!(write(&mut a).await, 0);
    drop(a);
    s.shutdown_with_grace(Duration::from_millis(50)).await;
}

/// A damaged state file stops the LU from starting with a message that
/// names the file and the fix; it never panics and never grants anything.
#[tokio::test]
async fn a_corrupt_state_file_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("pr");
    let (s, addr) = launch(&state).await.unwrap();
    let mut a = login(addr, A, 1).await;
    let riek = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;
    assert_eq!(prout(&mut a, riek, 0, &basic(0, 0xA, true)).await.status, 0);
    assert_eq!(
        prout(&mut a, sa::PROUT_RESERVE, 3, &basic(0xA, 0, false))
            .await
            .status,
        0
    );
    drop(a);
    s.shutdown_with_grace(Duration::from_millis(50)).await;
    let file = std::fs::read_dir(&state)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read_to_string(&file).unwrap();
    for bad in [
        &good[..good.len() / 2],
        "\u{0}\u{1}garbage",
        &good.replace("\"type\": 3", "\"type\": 9"),
    ] {
        std::fs::write(&file, bad).unwrap();
        let Err(e) = launch(&state).await else {
            panic!("a corrupt state file must not start the LU");
        };
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("fix or remove the file"), "{e}");
    }
}

/// A state that cannot be saved is not granted: the REGISTER with APTPL=1
/// fails with INSUFFICIENT REGISTRATION RESOURCES and leaves no key.
#[tokio::test]
async fn a_failed_save_refuses_the_command_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("pr");
    let (s, addr) = launch(&state).await.unwrap();
    // The state directory's place is taken by a regular file.
    std::fs::write(&state, b"not a directory").unwrap();
    let mut a = login(addr, A, 1).await;
    let riek = sa::PROUT_REGISTER_AND_IGNORE_EXISTING_KEY;
    let r = prout(&mut a, riek, 0, &basic(0, 0xA, true)).await;
    let sd = sense(&r);
    assert_eq!(
        (sd.key, sd.asc),
        (
            SenseKey::ILLEGAL_REQUEST,
            Asc::INSUFFICIENT_REGISTRATION_RESOURCES
        )
    );
    assert!(keys(&prin(&mut a, sa::PRIN_READ_KEYS).await).is_empty());
    assert_eq!(prin(&mut a, sa::PRIN_REPORT_CAPABILITIES).await[3] & 1, 0);
    // Without APTPL nothing needs saving: the same REGISTER works.
    assert_eq!(
        prout(&mut a, riek, 0, &basic(0, 0xA, false)).await.status,
        0
    );
    assert_eq!(keys(&prin(&mut a, sa::PRIN_READ_KEYS).await), vec![0xA]);
    drop(a);
    s.shutdown_with_grace(Duration::from_millis(50)).await;
}
