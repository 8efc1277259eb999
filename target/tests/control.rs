//! The control channel (issue #12) end to end at the target: a real server
//! on 127.0.0.1 started through the admin layer (so LUNs have I/O
//! counters), the raw initiator of `common`, CDBs built with
//! `proto::scsi::control`. The `fua` policy is checked with the admin
//! layer's per-LUN flush counter: `CountingBackend` counts every flush and
//! flush_range (the file backend's fdatasync) that reaches the backend.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{isid, CmdResult, Conn, INITIATOR};
use iscsi_target::admin::protocol::{LunInfo, Request, ShowResult};
use iscsi_target::admin::{self, Admin};
use iscsi_target::config_file;
use iscsi_target::server::Server;
use proto::scsi::control::{self, decode_switches, ControlVpd, CtlCommand, Switch};
use proto::scsi::{Asc, CdbSize, Command, Rw, Sense, SenseKey};

const TARGET: &str = "iqn.2024-01.org.example:ctl";
const OTHER: &str = "iqn.2024-01.org.example:no-right";

struct Rig {
    server: Option<Server>,
    admin: Arc<Admin>,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// One target, LUN 0 a 4 MiB file in write-back mode; INITIATOR has
    /// the control right, OTHER has not.
    async fn start(control: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("lun0.img");
        let text = serde_json::json!({
            "targets": [{
                "name": TARGET,
                "portal_groups": [{"tpgt": 1, "portals": ["127.0.0.1:0"]}],
                "luns": [{"lun": 0, "backend": "file", "path": img, "size": "4M",
                          "mode": "wb", "control": control}],
                "acl": [{"initiator": INITIATOR, "control": true}, {"initiator": OTHER}]
            }]
        })
        .to_string();
        let loaded = config_file::parse_str(&text).unwrap();
        let (server, admin) = admin::launch(loaded, None).await.unwrap();
        let addr = server.local_addrs()[0];
        Rig {
            server: Some(server),
            admin,
            addr,
            _dir: dir,
        }
    }

    async fn conn(&self, name: &str, n: u8) -> Conn {
        let name = name.to_string();
        let mut c = Conn::login_with(self.addr, Some(TARGET), isid(n), 0, 0, |cfg| {
            cfg.initiator_name = name
        })
        .await
        .unwrap();
        c.clear_unit_attention().await.unwrap();
        c
    }

    async fn lun0(&self) -> LunInfo {
        let r = self.admin.handle(Request::Show { target: None }).await;
        assert!(r.ok, "{r:?}");
        let show: ShowResult = serde_json::from_value(r.result.unwrap()).unwrap();
        show.targets[0].luns[0].clone()
    }

    async fn set_control(&self, on: bool) {
        let r = self
            .admin
            .handle(Request::SetLun {
                target: TARGET.into(),
                lun: 0,
                mode: None,
                size: None,
                force: false,
                control: Some(on),
            })
            .await;
        assert!(r.ok, "{r:?}");
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown_with_grace(Duration::from_millis(10)).await;
        }
    }
}

fn rw_cdb(write: bool, size: CdbSize, lba: u64, blocks: u32, tag: u8) -> Vec<u8> {
    let rw = Rw {
        lba,
        blocks,
        ..Rw::default()
    };
    let cmd = if write {
        Command::Write { size, rw }
    } else {
        Command::Read { size, rw }
    };
    let mut c = cmd.encode().as_bytes().to_vec();
    control::set_tag(&mut c, tag).unwrap();
    c
}

async fn write(c: &mut Conn, size: CdbSize, lba: u64, data: &[u8], tag: u8) -> CmdResult {
    let cdb = rw_cdb(true, size, lba, (data.len() / 512) as u32, tag);
    c.command(0, &cdb, data, 0).await.unwrap()
}

async fn read(c: &mut Conn, lba: u64, blocks: u32, tag: u8) -> CmdResult {
    let cdb = rw_cdb(false, CdbSize::Ten, lba, blocks, tag);
    c.command(0, &cdb, &[], blocks * 512).await.unwrap()
}

fn sense(r: &CmdResult) -> Sense {
    assert_eq!(r.status, 2, "expected CHECK CONDITION");
    Sense::parse(r.sense.as_deref().unwrap_or_default()).expect("sense data")
}

async fn ctl(c: &mut Conn, cmd: &CtlCommand) -> CmdResult {
    let cdb = cmd.encode().unwrap();
    let data = cmd.data_out().unwrap_or_default();
    let read_len = match cmd {
        CtlCommand::List { alloc_len } | CtlCommand::Get { alloc_len, .. } => *alloc_len,
        CtlCommand::Set { .. } => 0,
    };
    c.command(0, &cdb, &data, read_len).await.unwrap()
}

async fn get(c: &mut Conn, name: &str) -> Switch {
    let r = ctl(
        c,
        &CtlCommand::Get {
            name: name.into(),
            alloc_len: 1024,
        },
    )
    .await;
    assert_eq!(r.status, 0, "GET {name}: {:?}", r.sense);
    let mut v = decode_switches(&r.data).unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0)
}

async fn set(c: &mut Conn, name: &str, value: &str) -> CmdResult {
    ctl(
        c,
        &CtlCommand::Set {
            name: name.into(),
            value: value.into(),
        },
    )
    .await
}

/// REPORT SUPPORTED OPERATION CODES, one command (options 1): its usage mask.
async fn usage_of(c: &mut Conn, opcode: u8) -> Vec<u8> {
    let cdb = [0xA3, 0x0C, 0x01, opcode, 0, 0, 0, 0, 0x01, 0, 0, 0];
    let r = c.command(0, &cdb, &[], 256).await.unwrap();
    assert_eq!(r.status, 0);
    r.data[4..].to_vec()
}

/// REPORT SUPPORTED OPERATION CODES, all commands (options 0): (opcode,
/// CDB length) of every descriptor.
async fn all_opcodes(c: &mut Conn) -> Vec<(u8, u16)> {
    let cdb = [0xA3, 0x0C, 0x00, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
    let r = c.command(0, &cdb, &[], 4096).await.unwrap();
    assert_eq!(r.status, 0);
    r.data[4..]
        .chunks_exact(8)
        .map(|d| (d[0], u16::from_be_bytes([d[6], d[7]])))
        .collect()
}

async fn vpd(c: &mut Conn, page: u8) -> CmdResult {
    c.command(0, &[0x12, 0x01, page, 0x01, 0x00, 0], &[], 256)
        .await
        .unwrap()
}

#[tokio::test]
async fn off_tagged_io_is_refused_as_before() {
    let rig = Rig::start(false).await;
    let mut c = rig.conn(INITIATOR, 1).await;
    let r = write(&mut c, CdbSize::Ten, 0, &[1u8; 512], 6).await;
    let s = sense(&r);
    assert_eq!(
        (s.key, s.asc),
        (SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB)
    );
    assert_eq!(
        s.sense_key_specific,
        Some(proto::scsi::sense::SenseKeySpecific::FieldPointer {
            cdb: true,
            bit: Some(7),
            field: 6
        })
    );
    // The vendor command is an unknown operation code.
    let r = ctl(&mut c, &CtlCommand::List { alloc_len: 512 }).await;
    assert_eq!(sense(&r).asc, Asc::INVALID_COMMAND_OPERATION_CODE);
    // REPORT SUPPORTED OPERATION CODES: byte 6 of WRITE(10) is GROUP
    // NUMBER only; C7h is not supported; no VPD page C7h.
    assert_eq!(usage_of(&mut c, 0x2A).await[6], 0x3F);
    let r = c
        .command(
            0,
            &[0xA3, 0x0C, 0x01, 0xC7, 0, 0, 0, 0, 0x01, 0, 0, 0],
            &[],
            64,
        )
        .await
        .unwrap();
    assert_eq!(r.data[1] & 0x07, 0x01, "C7h reported as not supported");
    assert!(!all_opcodes(&mut c).await.iter().any(|&(op, _)| op == 0xC7));
    let pages = vpd(&mut c, 0x00).await;
    assert!(!pages.data[4..].contains(&control::CTL_VPD_PAGE));
    assert_eq!(vpd(&mut c, control::CTL_VPD_PAGE).await.status, 2);
    // Untagged I/O works, nothing counted.
    assert_eq!(
        write(&mut c, CdbSize::Ten, 0, &[1u8; 512], 0).await.status,
        0
    );
    let lun = rig.lun0().await;
    assert!(!lun.control.enabled);
    assert!(lun.control.tags.values().all(|t| t.commands == 0));
    rig.stop().await;
}

#[tokio::test]
async fn on_tags_are_counted_and_remembered() {
    let rig = Rig::start(false).await;
    rig.set_control(true).await;
    let mut c = rig.conn(INITIATOR, 1).await;
    for i in 0..3u64 {
        let r = write(&mut c, CdbSize::Ten, 8 * i, &[0xA5; 1024], 6).await;
        assert_eq!(r.status, 0, "{:?}", r.sense);
    }
    // Every CDB size carries tags.
    assert_eq!(
        write(&mut c, CdbSize::Twelve, 100, &[1; 512], 6)
            .await
            .status,
        0
    );
    assert_eq!(
        write(&mut c, CdbSize::Sixteen, 101, &[1; 512], 7)
            .await
            .status,
        0
    );
    let r = read(&mut c, 0, 2, 2).await;
    assert_eq!((r.status, &r.data[..4]), (0, &[0xA5u8; 4][..]));
    // Untagged I/O is not counted.
    assert_eq!(
        write(&mut c, CdbSize::Ten, 50, &[0; 512], 0).await.status,
        0
    );
    let lun = rig.lun0().await;
    let t = &lun.control.tags;
    assert!(lun.control.enabled);
    assert_eq!((t["6"].commands, t["6"].bytes), (4, 3 * 1024 + 512));
    assert_eq!(
        (t["7"].commands, t["2"].commands, t["1"].commands),
        (1, 1, 0)
    );
    assert_eq!(lun.control.recent.len(), 6);
    let first = &lun.control.recent[0];
    assert_eq!(
        (first.tag, first.write, first.lba, first.blocks, first.lun),
        (6, true, 0, 2, 0)
    );
    assert_eq!(first.initiator, INITIATOR);
    let last = lun.control.recent.last().unwrap();
    assert_eq!((last.tag, last.write, last.lba), (2, false, 0));
    // REPORT SUPPORTED OPERATION CODES tells the truth: tag bits in the
    // masks, the vendor command listed; VPD page C7h listed and served.
    assert_eq!(usage_of(&mut c, 0x2A).await[6], 0xFF);
    assert_eq!(usage_of(&mut c, 0xA8).await[10], 0xFF);
    assert_eq!(usage_of(&mut c, 0x8A).await[15], 0xE0);
    assert_eq!(usage_of(&mut c, 0xC7).await, control::CTL_USAGE.to_vec());
    assert!(all_opcodes(&mut c).await.contains(&(0xC7, 16)));
    assert!(vpd(&mut c, 0x00).await.data[4..].contains(&control::CTL_VPD_PAGE));
    let page = ControlVpd::decode(&vpd(&mut c, control::CTL_VPD_PAGE).await.data).unwrap();
    assert!(page.enabled && page.control_right);
    assert_eq!(page.tag_bits, control::TAG_FIELDS);
    assert!(page.switches.contains(&"tag6.policy".to_string()));
    // Off again: refused as before, counters kept.
    rig.set_control(false).await;
    assert_eq!(
        sense(&write(&mut c, CdbSize::Ten, 0, &[1; 512], 6).await).asc,
        Asc::INVALID_FIELD_IN_CDB
    );
    assert_eq!(rig.lun0().await.control.tags["6"].commands, 4);
    rig.stop().await;
}

#[tokio::test]
async fn ring_is_bounded() {
    let rig = Rig::start(true).await;
    let mut c = rig.conn(INITIATOR, 1).await;
    for i in 0..(iscsi_target::scsi::control::RING_LEN as u64 + 6) {
        assert_eq!(read(&mut c, i, 1, 1).await.status, 0);
    }
    let lun = rig.lun0().await;
    assert_eq!(
        lun.control.recent.len(),
        iscsi_target::scsi::control::RING_LEN
    );
    assert_eq!(
        lun.control.recent[0].lba, 6,
        "the oldest entries were dropped"
    );
    assert_eq!(lun.control.tags["1"].commands, 70);
    rig.stop().await;
}

#[tokio::test]
async fn fua_policy_makes_tagged_writes_durable_in_write_back() {
    let rig = Rig::start(true).await;
    let mut c = rig.conn(INITIATOR, 1).await;
    let r = set(&mut c, "tag6.policy", "fua").await;
    assert_eq!(r.status, 0, "{:?}", r.sense);
    let flushes = |l: &LunInfo| l.io.unwrap().flush_ops;
    let before = flushes(&rig.lun0().await);
    // Write-back: an untagged write (and a tag-1 write, policy log) is not synced...
    assert_eq!(
        write(&mut c, CdbSize::Ten, 0, &[7; 4096], 0).await.status,
        0
    );
    assert_eq!(
        write(&mut c, CdbSize::Ten, 8, &[7; 4096], 1).await.status,
        0
    );
    assert_eq!(flushes(&rig.lun0().await), before);
    // ...a tag-6 write is, before its status.
    for i in 0..3 {
        assert_eq!(
            write(&mut c, CdbSize::Ten, 16 + i, &[8; 512], 6)
                .await
                .status,
            0
        );
    }
    let lun = rig.lun0().await;
    assert_eq!(flushes(&lun), before + 3);
    assert_eq!(lun.control.tags["6"].forced_fua, 3);
    assert_eq!(get(&mut c, "tag6.policy").await.value, "fua");
    rig.stop().await;
}

#[tokio::test]
async fn reject_policy_refuses_with_its_own_sense() {
    let rig = Rig::start(true).await;
    let mut c = rig.conn(INITIATOR, 1).await;
    assert_eq!(write(&mut c, CdbSize::Ten, 0, &[1; 512], 0).await.status, 0);
    assert_eq!(set(&mut c, "tag3.policy", "reject").await.status, 0);
    let s = sense(&write(&mut c, CdbSize::Ten, 0, &[2; 512], 3).await);
    assert_eq!(s.key, SenseKey::ILLEGAL_REQUEST);
    assert_eq!(s.asc, Asc::new(control::ASC_TAG_REJECTED, 3));
    // Nothing was written.
    assert_eq!(read(&mut c, 0, 1, 0).await.data[0], 1);
    let s = sense(&read(&mut c, 0, 1, 3).await);
    assert_eq!(s.asc, Asc::new(0x80, 3));
    let t = &rig.lun0().await.control.tags["3"];
    assert_eq!(
        (t.commands, t.rejected, t.policy.as_str()),
        (2, 2, "reject")
    );
    // Back to log: accepted.
    assert_eq!(set(&mut c, "tag3.policy", "log").await.status, 0);
    assert_eq!(write(&mut c, CdbSize::Ten, 0, &[2; 512], 3).await.status, 0);
    rig.stop().await;
}

#[tokio::test]
async fn limit_policy_paces_one_tag_only() {
    let rig = Rig::start(true).await;
    let mut c = rig.conn(INITIATOR, 1).await;
    assert_eq!(set(&mut c, "tag5.policy", "limit:20").await.status, 0);
    let t0 = Instant::now();
    for i in 0..10 {
        assert_eq!(read(&mut c, i, 1, 5).await.status, 0);
    }
    let limited = t0.elapsed();
    // 10 commands at 20/s: the 10th starts 450 ms after the first.
    assert!(limited >= Duration::from_millis(440), "{limited:?}");
    // Another tag (policy log) never waits: its wait counter stays 0
    // (a counter, not wall time, so a loaded machine cannot fail it).
    for i in 0..10 {
        assert_eq!(read(&mut c, i, 1, 4).await.status, 0);
    }
    let tags = rig.lun0().await.control.tags;
    assert!(tags["5"].delayed_ms > 0, "{:?}", tags["5"]);
    assert_eq!((tags["4"].commands, tags["4"].delayed_ms), (10, 0));
    rig.stop().await;
}

#[tokio::test]
async fn switches_list_get_set_and_io_mode_ro() {
    let rig = Rig::start(true).await;
    let mut c = rig.conn(INITIATOR, 1).await;
    let mut other = rig.conn(OTHER, 2).await;
    let r = ctl(&mut c, &CtlCommand::List { alloc_len: 4096 }).await;
    assert_eq!(r.status, 0);
    let list = decode_switches(&r.data).unwrap();
    let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(&names[..3], &["io_mode", "trace", "tag1.policy"]);
    assert!(names.contains(&"tag7.policy") && names.contains(&"can_set"));
    assert_eq!(get(&mut c, "io_mode").await.value, "wb");
    assert_eq!(get(&mut c, "can_set").await.value, "yes");
    // A short allocation length truncates; the header says how much there is.
    let r = ctl(&mut c, &CtlCommand::List { alloc_len: 16 }).await;
    assert_eq!(r.data.len(), 16);
    assert!(matches!(
        decode_switches(&r.data),
        Err(control::ControlError::Truncated { .. })
    ));
    // Unknown switch, bad value, read-only switch.
    assert_eq!(
        sense(
            &ctl(
                &mut c,
                &CtlCommand::Get {
                    name: "nope".into(),
                    alloc_len: 64
                }
            )
            .await
        )
        .asc,
        Asc::INVALID_FIELD_IN_CDB
    );
    assert_eq!(
        sense(&set(&mut c, "io_mode", "fast").await).asc,
        Asc::INVALID_FIELD_IN_PARAMETER_LIST
    );
    assert_eq!(
        sense(&set(&mut c, "can_set", "yes").await).asc,
        Asc::INVALID_FIELD_IN_CDB
    );
    // trace on/off.
    assert_eq!(set(&mut c, "trace", "on").await.status, 0);
    assert_eq!(get(&mut c, "trace").await.value, "on");
    assert!(rig.lun0().await.control.trace);
    // io_mode=ro: the next write is WRITE PROTECTED, GET says ro, the admin
    // view agrees; the setter gets no unit attention, the other nexus does.
    assert_eq!(set(&mut c, "io_mode", "ro").await.status, 0);
    let s = sense(&write(&mut c, CdbSize::Ten, 0, &[1; 512], 0).await);
    assert_eq!(
        (s.key, s.asc),
        (SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED)
    );
    assert_eq!(get(&mut c, "io_mode").await.value, "ro");
    assert_eq!(rig.lun0().await.mode, "ro");
    let ua = sense(&read(&mut other, 0, 1, 0).await);
    assert_eq!(
        (ua.key, ua.asc),
        (SenseKey::UNIT_ATTENTION, Asc::MODE_PARAMETERS_CHANGED)
    );
    assert_eq!(set(&mut c, "io_mode", "wb").await.status, 0);
    assert_eq!(write(&mut c, CdbSize::Ten, 0, &[1; 512], 0).await.status, 0);
    rig.stop().await;
}

#[tokio::test]
async fn set_without_the_control_right_is_refused_and_changes_nothing() {
    let rig = Rig::start(true).await;
    let mut other = rig.conn(OTHER, 2).await;
    // Reading is allowed.
    assert_eq!(get(&mut other, "can_set").await.value, "no");
    let page = ControlVpd::decode(&vpd(&mut other, control::CTL_VPD_PAGE).await.data).unwrap();
    assert!(page.enabled && !page.control_right);
    for (name, value) in [
        ("io_mode", "ro"),
        ("tag6.policy", "reject"),
        ("trace", "on"),
    ] {
        let s = sense(&set(&mut other, name, value).await);
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::ILLEGAL_REQUEST, Asc::new(0x20, 0x02)),
            "{name}"
        );
    }
    assert_eq!(get(&mut other, "io_mode").await.value, "wb");
    assert_eq!(get(&mut other, "tag6.policy").await.value, "log");
    assert_eq!(
        write(&mut other, CdbSize::Ten, 0, &[3; 512], 6)
            .await
            .status,
        0
    );
    let lun = rig.lun0().await;
    assert_eq!((lun.mode.as_str(), lun.control.trace), ("wb", false));
    // Granting the right through the admin API lets it SET.
    let r = rig
        .admin
        .handle(Request::Allow {
            target: TARGET.into(),
            initiator: OTHER.into(),
            luns: None,
            all_luns: false,
            chap: None,
            mutual_chap: None,
            control: Some(true),
        })
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(set(&mut other, "trace", "on").await.status, 0);
    rig.stop().await;
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn trace_switch_logs_every_command_and_set_names_the_initiator() {
    // Current-thread runtime: the server's tasks run on this thread, so the
    // thread-local subscriber sees their events.
    let log = Captured::default();
    let w = log.clone();
    let sub = tracing_subscriber::fmt()
        .with_env_filter("iscsi_target=info")
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    let rig = Rig::start(true).await;
    let mut c = rig.conn(INITIATOR, 1).await;
    assert_eq!(read(&mut c, 3, 1, 0).await.status, 0);
    assert!(
        !log.text().contains("iscsi_target::trace"),
        "trace is off by default"
    );
    assert_eq!(set(&mut c, "trace", "on").await.status, 0);
    let set_line = log.text();
    assert!(
        set_line.contains("control switch set") && set_line.contains(INITIATOR),
        "SET logged with the initiator's name:\n{set_line}"
    );
    assert_eq!(read(&mut c, 3, 1, 0).await.status, 0);
    let text = log.text();
    let traced: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("iscsi_target::trace"))
        .collect();
    // The READ(10) after the SET: opcode 28h, LBA 3.
    assert!(
        traced
            .iter()
            .any(|l| l.contains("[28, 00, 00, 00, 00, 03,")),
        "{traced:#?}"
    );
    assert_eq!(set(&mut c, "trace", "off").await.status, 0);
    let n = log
        .text()
        .lines()
        .filter(|l| l.contains("iscsi_target::trace"))
        .count();
    assert_eq!(read(&mut c, 3, 1, 0).await.status, 0);
    let after = log
        .text()
        .lines()
        .filter(|l| l.contains("iscsi_target::trace"))
        .count();
    assert_eq!(n, after, "trace off: nothing more traced");
    rig.stop().await;
}
