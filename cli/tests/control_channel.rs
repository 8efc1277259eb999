//! The control channel end to end (docs/control-channel.md): our target
//! (`iscsi target serve --control`, real sockets, the built binary), our
//! initiator (`iscsi login --foreground --tag-writes`, `iscsi scsi raw
//! --tag`, `iscsi ctl`), and NBD clients on the exports.
//!
//! What goes on the wire is checked byte for byte without tcpdump: the
//! initiator talks to the target through [`Sniffer`], a TCP relay that
//! decodes the initiator's PDUs with `proto`'s frame decoder and keeps every
//! SCSI Command's CDB. What the target made of it is read from `iscsi target
//! show --json` (per-tag counters and the recent-tag ring).

mod nbd_common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use nbd_common::{Raw, BIN, CMD_WRITE, EPERM};
use proto::pdu::{decode_frame, DecodeLimits, Pdu};
use proto::scsi::cdb;
use proto::scsi::control::tag_of;
use serde_json::Value;
use testbed::nbd_client::NbdIo;
use testbed::scenarios::workload::BlockIo;
use testbed::ServerProcess;

const T: &str = "iqn.2026-01.rs.iscsi-rs:control-test";

// ---------------------------------------------------------------------------
// A relay that records the CDBs the initiator sends.
// ---------------------------------------------------------------------------

/// TCP relay in front of the target: bytes go through unchanged; the
/// initiator's stream is also decoded (`proto::pdu::decode_frame`, no
/// digests) and each SCSI Command's CDB is kept, in order.
struct Sniffer {
    addr: SocketAddr,
    cdbs: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Sniffer {
    fn start(upstream: SocketAddr) -> Sniffer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = l.local_addr().unwrap();
        let cdbs = Arc::new(Mutex::new(Vec::new()));
        let seen = cdbs.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let Ok(up) = TcpStream::connect(upstream) else {
                    return;
                };
                let (c2, up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || relay(up2, c2, None));
                let seen = seen.clone();
                std::thread::spawn(move || relay(c, up, Some(seen)));
            }
        });
        Sniffer { addr, cdbs }
    }

    /// The CDBs seen so far (taken: the next call starts empty).
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.cdbs.lock().unwrap())
    }
}

/// Copy `from` to `to`; with `seen`, decode the PDUs on the way, each
/// recorded before its bytes are passed on (so a command is in `seen`
/// before the target can answer it).
fn relay(mut from: TcpStream, mut to: TcpStream, seen: Option<Arc<Mutex<Vec<Vec<u8>>>>>) {
    let limits = DecodeLimits {
        max_data_segment_length: 16 << 20,
        ..DecodeLimits::default()
    };
    let mut acc = BytesMut::new();
    let mut decoding = seen.is_some();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let (true, Some(seen)) = (decoding, &seen) {
            acc.extend_from_slice(&buf[..n]);
            loop {
                match decode_frame(&mut acc, &limits) {
                    Ok(Some(Pdu::ScsiCommand(c))) => seen.lock().unwrap().push(c.cdb.to_vec()),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("relay: cannot decode the initiator's stream: {e}");
                        decoding = false;
                        break;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// The CDB's own length (the BHS field is 16 bytes, zero padded).
fn cdb_len(c: &[u8]) -> usize {
    match c[0] >> 5 {
        0 => 6,
        1 | 2 => 10,
        5 => 12,
        4 => 16,
        _ => 16,
    }
}

/// The captured CDBs with this opcode, each cut to its length; the padding
/// must be zero.
fn with_opcode(cdbs: &[Vec<u8>], op: u8) -> Vec<Vec<u8>> {
    cdbs.iter()
        .filter(|c| c[0] == op)
        .map(|c| {
            let n = cdb_len(c);
            assert!(c[n..].iter().all(|&b| b == 0), "padding: {c:02x?}");
            c[..n].to_vec()
        })
        .collect()
}

/// (LBA, blocks) of a READ(16)/WRITE(16) CDB.
fn lba_blocks16(c: &[u8]) -> (u64, u32) {
    (
        u64::from_be_bytes(c[2..10].try_into().unwrap()),
        u32::from_be_bytes(c[10..14].try_into().unwrap()),
    )
}

// ---------------------------------------------------------------------------
// The target and the CLI.
// ---------------------------------------------------------------------------

struct Target {
    _process: ServerProcess,
    addr: SocketAddr,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Target {
    /// `iscsi target serve` with one file LUN (16 MiB, write-back) and an
    /// admin socket; `extra` adds flags such as `--control`.
    fn start(extra: &[&str]) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let lun = format!("file:{},size=16M", dir.path().join("disk.img").display());
        let mut c = Command::new(BIN);
        c.args(["target", "serve", "--portal", "127.0.0.1:0", "--target", T])
            .args(["--lun", &lun, "--log", "warn", "--admin-socket"])
            .arg(&socket)
            .args(extra);
        let process = ServerProcess::spawn(c, "admin socket ", Duration::from_secs(10))
            .expect("iscsi target serve starts");
        let addr = process.stdout_values("listening on ")[0]
            .parse()
            .expect("the listening address");
        Target {
            _process: process,
            addr,
            socket,
            dir,
        }
    }

    fn admin(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("target")
            .args(args)
            .arg("--admin-socket")
            .arg(&self.socket)
            .output()
            .expect("run iscsi target")
    }

    /// LUN 0's `control` object of `iscsi target show --json`.
    fn control(&self) -> Value {
        let o = self.admin(&["show", "--json"]);
        assert!(o.status.success(), "show: {}", text(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).expect("show --json");
        let t = v["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == T))
            .unwrap_or_else(|| panic!("{T} in {v:#}"));
        t["luns"][0]["control"].clone()
    }

    /// `iscsi target show --json`, LUN 0.
    fn lun(&self) -> Value {
        let o = self.admin(&["show", "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).expect("show --json");
        v["targets"][0]["luns"][0].clone()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `iscsi ctl ARGS --portal P --target T` (and `--initiator-name` if given).
fn ctl(portal: SocketAddr, initiator: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("ctl").args(args).args([
        "--portal",
        &portal.to_string(),
        "--target",
        T,
        "--timeout",
        "5",
    ]);
    if let Some(i) = initiator {
        c.args(["--initiator-name", i]);
    }
    c.output().expect("run iscsi ctl")
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n{}\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// `iscsi scsi --portal P --target T raw CDB ... --json`.
fn scsi_raw(portal: SocketAddr, args: &[&str]) -> (Output, Value) {
    let o = Command::new(BIN)
        .args(["scsi", "--portal", &portal.to_string(), "--target", T])
        .args(["--timeout", "5", "--json", "raw"])
        .args(args)
        .output()
        .expect("run iscsi scsi");
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o, v)
}

fn login(portal: SocketAddr, extra: &[&str]) -> ServerProcess {
    nbd_common::login(portal, T, extra)
}

fn nbd(l: &ServerProcess, export: &str) -> NbdIo {
    NbdIo::connect(
        &nbd_common::nbd_addr(l).to_string(),
        export,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("NBD export {export}: {e}"))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn file_with(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

/// `--tag-writes 6`: every WRITE(16) the NBD export sends carries tag 6 in
/// the CONTROL byte (bits 7-5: 0xC0) and is otherwise the standard CDB;
/// reads are byte-identical to untagged READ(16)s. The target decodes the
/// same tag: its counters and ring match what went on the wire.
#[test]
fn tag_writes_are_byte_exact_on_the_wire_and_counted_by_the_target() {
    let t = Target::start(&["--control"]);
    let relay = Sniffer::start(t.addr);
    let l = login(relay.addr, &["--tag-writes", "6"]);
    let _ = relay.take(); // login-time scan: INQUIRY, READ CAPACITY, ...

    let data = pattern(64 << 10, 1);
    let mut c = nbd(&l, "lun0");
    c.write(4096, &data).unwrap();
    c.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    c.read(4096, &mut back).unwrap();
    assert_eq!(back, data);
    drop(c);

    let cdbs = relay.take();
    let writes = with_opcode(&cdbs, 0x8A);
    assert!(!writes.is_empty(), "no WRITE(16) seen: {cdbs:02x?}");
    let mut blocks = 0u64;
    for w in &writes {
        assert_eq!(w[15], 0xC0, "tag 6 in the CONTROL byte: {w:02x?}");
        assert_eq!(tag_of(w), Some(6));
        let (lba, n) = lba_blocks16(w);
        let mut expect = cdb::write16(lba, n, false).as_bytes().to_vec();
        expect[15] = 0xC0;
        assert_eq!(w, &expect, "standard WRITE(16) but for the tag");
        blocks += n as u64;
    }
    assert_eq!(blocks * 512, data.len() as u64);
    let reads = with_opcode(&cdbs, 0x88);
    assert!(!reads.is_empty());
    for r in &reads {
        let (lba, n) = lba_blocks16(r);
        assert_eq!(r.as_slice(), cdb::read16(lba, n, false).as_bytes());
    }

    let ctl = t.control();
    assert_eq!(ctl["enabled"], true, "{ctl:#}");
    assert_eq!(ctl["tags"]["6"]["commands"], writes.len() as u64, "{ctl:#}");
    assert_eq!(ctl["tags"]["6"]["bytes"], data.len() as u64, "{ctl:#}");
    let recent = ctl["recent"].as_array().expect("recent ring");
    let first = lba_blocks16(&writes[0]);
    assert!(
        recent.iter().any(|e| e["tag"] == 6
            && e["lba"] == first.0
            && e["blocks"] == first.1
            && e["write"] == true
            && e["initiator"].as_str().is_some_and(|i| !i.is_empty())),
        "ring has the first tagged write {first:?}: {ctl:#}"
    );
    assert!(recent.iter().all(|e| e["tag"] == 6), "{ctl:#}");
}

/// `lun0@tag3` tags reads and writes of that mount only; `lun0@tag0` is
/// untagged although the session tags writes; `scsi raw --tag 6` sets
/// byte 6 of a WRITE(10) to 0xC0 and changes nothing else.
#[test]
fn tagged_views_and_raw_tags() {
    let t = Target::start(&["--control"]);
    let relay = Sniffer::start(t.addr);
    let l = login(relay.addr, &["--tag-writes", "6"]);
    let _ = relay.take();

    let mut v3 = nbd(&l, "lun0@tag3");
    v3.write(0, &pattern(4096, 3)).unwrap();
    let mut b = vec![0u8; 4096];
    v3.read(0, &mut b).unwrap();
    assert_eq!(b, pattern(4096, 3));
    drop(v3);
    let cdbs = relay.take();
    let (w, r) = (with_opcode(&cdbs, 0x8A), with_opcode(&cdbs, 0x88));
    assert!(!w.is_empty() && !r.is_empty(), "{cdbs:02x?}");
    assert!(w.iter().chain(&r).all(|c| c[15] == 3 << 5), "{cdbs:02x?}");

    let mut v0 = nbd(&l, "lun0@tag0");
    v0.write(8192, &pattern(4096, 4)).unwrap();
    drop(v0);
    for c in with_opcode(&relay.take(), 0x8A) {
        let (lba, n) = lba_blocks16(&c);
        assert_eq!(c.as_slice(), cdb::write16(lba, n, false).as_bytes());
    }
    let ctl = t.control();
    assert_eq!(ctl["tags"]["3"]["commands"], (w.len() + r.len()) as u64);
    assert_eq!(ctl["tags"]["3"]["bytes"], 8192);

    // The session's counters show the views that were used.
    drop(l);

    let f = t.path("one-block");
    file_with(&f, &pattern(512, 9));
    let cdb10 = "2a 00 00 00 00 10 00 00 01 00";
    let (o, v) = scsi_raw(
        relay.addr,
        &[cdb10, "--write-file", f.to_str().unwrap(), "--tag", "6"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(v["cdb"], "2a 00 00 00 00 10 c0 00 01 00");
    let w10 = with_opcode(&relay.take(), 0x2A);
    assert_eq!(w10, vec![vec![0x2A, 0, 0, 0, 0, 0x10, 0xC0, 0, 1, 0]]);
    let e = t.control()["recent"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["tag"] == 6 && e["lba"] == 0x10 && e["blocks"] == 1);
    assert!(e, "the raw WRITE(10) is in the ring");

    // Out of range and untaggable commands are refused before sending.
    let (o, _) = scsi_raw(
        relay.addr,
        &[cdb10, "--write-file", f.to_str().unwrap(), "--tag", "8"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let (o, _) = scsi_raw(relay.addr, &["00 00 00 00 00 00", "--tag", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// fdatasync(2) calls the target process makes while `work` runs, counted
/// with strace attached to it (all threads; `work` starts once strace says
/// it is attached).
fn fdatasyncs(t: &Target, work: impl FnOnce()) -> usize {
    let out = t.path("strace.txt");
    let mut st = Command::new("strace")
        .args(["-f", "-e", "trace=fdatasync", "-o"])
        .arg(&out)
        .args(["-p", &t._process.id().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace");
    let stderr = st.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if l.contains("attached") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("strace attaches to the target");
    std::thread::sleep(Duration::from_millis(300)); // the other threads' attach lines
    work();
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-INT", &st.id().to_string()])
        .status();
    let _ = st.wait();
    let log = std::fs::read_to_string(&out).unwrap_or_default();
    log.lines().filter(|l| l.contains("fdatasync(")).count()
}

/// `tag6.policy=fua`: a tagged write is durable before its status (the
/// target counts it as forced FUA and its file backend calls fdatasync
/// for each one, counted with strace), untagged writes on the same
/// write-back LUN are not synced.
#[test]
fn fua_policy_syncs_tagged_writes() {
    if !nbd_common::have("strace") {
        return;
    }
    let t = Target::start(&["--control"]);
    let out = ok(ctl(t.addr, None, &["set", "tag6.policy=fua"]), "ctl set");
    assert_eq!(out.trim(), "tag6.policy=fua");
    let l = login(t.addr, &["--tag-writes", "6"]);
    let mut tagged = nbd(&l, "lun0");
    let mut plain = nbd(&l, "lun0@tag0");
    let synced = fdatasyncs(&t, || {
        for i in 0..4u64 {
            tagged.write(i * 4096, &pattern(4096, i as u8)).unwrap();
        }
    });
    assert!(
        synced >= 4,
        "each of 4 tagged writes synced: {synced} fdatasync calls"
    );
    let unsynced = fdatasyncs(&t, || {
        for i in 0..4u64 {
            plain.write(i * 4096, &pattern(4096, 9)).unwrap();
        }
    });
    assert_eq!(
        unsynced, 0,
        "untagged writes on a write-back LUN are not synced"
    );
    let ctl = t.control();
    assert_eq!(ctl["tags"]["6"]["policy"], "fua", "{ctl:#}");
    assert_eq!(ctl["tags"]["6"]["forced_fua"], 4, "{ctl:#}");
}

/// `iscsi ctl set io_mode=ro`: the next NBD write fails with EPERM (the
/// target answered WRITE PROTECTED), `ctl get` says ro; back to wb, writes
/// work again.
#[test]
fn io_mode_ro_write_protects_the_lun() {
    let t = Target::start(&["--control"]);
    let l = login(t.addr, &[]);
    let addr = nbd_common::nbd_addr(&l);
    let mut c = Raw::connect(addr);
    c.go("lun0");
    c.request(0, CMD_WRITE, 1, 0, 512);
    c.send(&[1u8; 512]);
    assert_eq!(c.simple_reply(), (0, 1));

    assert_eq!(
        ok(ctl(t.addr, None, &["set", "io_mode=ro"]), "set").trim(),
        "io_mode=ro"
    );
    assert_eq!(
        ok(ctl(t.addr, None, &["get", "io_mode"]), "get").trim(),
        "io_mode=ro"
    );
    let v: Value =
        serde_json::from_str(&ok(ctl(t.addr, None, &["get", "io_mode", "--json"]), "get")).unwrap();
    assert_eq!(v["value"], "ro");
    assert_eq!(v["writable"], true);

    c.request(0, CMD_WRITE, 2, 0, 512);
    c.send(&[2u8; 512]);
    assert_eq!(c.simple_reply(), (EPERM, 2), "WRITE PROTECTED is EPERM");
    let f = t.path("b");
    file_with(&f, &[3u8; 512]);
    let (o, v) = scsi_raw(
        t.addr,
        &[
            "2a 00 00000000 00 0001 00",
            "--write-file",
            f.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(v["sense_key"], "DATA PROTECT", "{v:#}");
    assert_eq!(v["asc"], "Asc(27/00)", "WRITE PROTECTED: {v:#}");
    assert_eq!(t.lun()["mode"], "ro");

    ok(ctl(t.addr, None, &["set", "io_mode=wb"]), "set wb");
    c.request(0, CMD_WRITE, 3, 0, 512);
    c.send(&[4u8; 512]);
    assert_eq!(c.simple_reply(), (0, 3));
}

/// `iscsi ctl list` shows every switch; `ctl info` the VPD page.
#[test]
fn list_and_info_show_the_switches() {
    let t = Target::start(&["--control"]);
    let v: Value =
        serde_json::from_str(&ok(ctl(t.addr, None, &["list", "--json"]), "list")).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for n in [
        "io_mode",
        "trace",
        "tag1.policy",
        "tag6.policy",
        "tag7.policy",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let human = ok(ctl(t.addr, None, &["list"]), "list");
    assert!(human.lines().next().unwrap().starts_with("NAME"), "{human}");
    assert!(human.contains("io_mode") && human.contains("wb"), "{human}");
    let info: Value =
        serde_json::from_str(&ok(ctl(t.addr, None, &["info", "--json"]), "info")).unwrap();
    assert_eq!(info["enabled"], true, "{info:#}");
    assert_eq!(info["control_right"], true, "{info:#}");
    assert_eq!(info["max_tag"], 7);

    // Unknown switches and values are refused with what to do.
    let o = ctl(t.addr, None, &["get", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no switch named"),
        "{}",
        text(&o.stderr)
    );
    let o = ctl(t.addr, None, &["set", "io_mode=fast"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("does not take that value"), "{err}");
    let o = ctl(t.addr, None, &["set", "io_mode"]);
    assert_eq!(o.status.code(), Some(2), "usage: {}", text(&o.stderr));
}

/// An initiator without the control right may LIST and GET but not SET:
/// refused with advice, and nothing changes on the target. A LUN with the
/// channel off refuses tags with INVALID FIELD IN CDB.
#[test]
fn set_without_the_control_right_is_refused_and_changes_nothing() {
    let t = Target::start(&[]);
    let o = t.admin(&["set-lun", "--target", T, "--lun", "0", "control=on"]);
    assert!(
        o.status.success(),
        "set-lun control=on: {}",
        text(&o.stderr)
    );
    let who = Some("iqn.2026-01.rs.iscsi-rs:no-right");

    let o = ctl(t.addr, who, &["set", "io_mode=ro"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(err.contains("lacks the control right"), "{err}");
    assert!(err.contains("ACCESS") || err.contains("20"), "{err}");
    assert_eq!(
        ok(ctl(t.addr, who, &["get", "io_mode"]), "get").trim(),
        "io_mode=wb"
    );
    assert_eq!(t.lun()["mode"], "wb");
    let info: Value =
        serde_json::from_str(&ok(ctl(t.addr, who, &["info", "--json"]), "info")).unwrap();
    assert_eq!(
        (info["enabled"].clone(), info["control_right"].clone()),
        (Value::Bool(true), Value::Bool(false))
    );

    // Channel off: tags and the vendor command are refused.
    let o = t.admin(&["set-lun", "--target", T, "--lun", "0", "control=off"]);
    assert!(o.status.success(), "control=off: {}", text(&o.stderr));
    let f = t.path("b");
    file_with(&f, &[5u8; 512]);
    let (o, v) = scsi_raw(
        t.addr,
        &[
            "2a 00 00000000 00 0001 00",
            "--write-file",
            f.to_str().unwrap(),
            "--tag",
            "6",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(v["sense_key"], "ILLEGAL REQUEST", "{v:#}");
    assert_eq!(v["asc"], "Asc(24/00)", "INVALID FIELD IN CDB: {v:#}");
    assert!(
        text(&o.stderr).contains("control channel is off"),
        "{}",
        text(&o.stderr)
    );
    let info: Value =
        serde_json::from_str(&ok(ctl(t.addr, who, &["info", "--json"]), "info off")).unwrap();
    assert_eq!(info["enabled"], false, "{info:#}");
    let o = ctl(t.addr, who, &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("control channel is off"),
        "{}",
        text(&o.stderr)
    );
}

/// Through the daemon: the tags are a node setting (`iscsi node update
/// --tag-writes`) and a per-login override (`iscsi login --tag-reads`);
/// the session shows them and the target counts both.
#[test]
fn daemon_sessions_carry_node_and_login_tags() {
    let t = Target::start(&["--control"]);
    let state = tempfile::tempdir().unwrap();
    let iscsi = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(state.path())
            .env("XDG_CONFIG_HOME", state.path().join("config"))
            .output()
            .expect("run iscsi")
    };
    let mut d = Command::new(BIN);
    d.args(["daemon", "--log", "warn", "--state-dir"])
        .arg(state.path())
        .env("XDG_CONFIG_HOME", state.path().join("config"));
    let _daemon = ServerProcess::spawn(d, "listening on", Duration::from_secs(10)).expect("daemon");
    let portal = t.addr.to_string();
    ok(iscsi(&["discover", "--portal", &portal]), "discover");
    ok(
        iscsi(&["node", "update", "--target", T, "--tag-writes", "6"]),
        "node update",
    );
    let n: Value = serde_json::from_str(&ok(
        iscsi(&["node", "show", "--target", T, "--json"]),
        "node show",
    ))
    .unwrap();
    assert_eq!(
        (n[0]["tag_writes"].clone(), n[0]["tag_reads"].clone()),
        (6.into(), Value::Null)
    );
    let o = iscsi(&["node", "update", "--target", T, "--tag-reads", "9"]);
    assert_eq!(o.status.code(), Some(2), "tag 9: {}", text(&o.stderr));

    ok(
        iscsi(&[
            "login",
            "--target",
            T,
            "--nbd",
            "127.0.0.1:0",
            "--tag-reads",
            "2",
        ]),
        "login",
    );
    let s: Value = serde_json::from_str(&ok(iscsi(&["session", "--json"]), "session")).unwrap();
    assert_eq!(
        s[0]["io_tags"],
        serde_json::json!({"reads": 2, "writes": 6}),
        "{s:#}"
    );
    let human = ok(iscsi(&["session"]), "session");
    assert!(
        human.contains("Control-channel tags: writes tag 6, reads tag 2"),
        "{human}"
    );

    let nbd_addr = s[0]["nbd"].as_str().unwrap().to_string();
    let mut c = NbdIo::connect(&nbd_addr, "lun0", Duration::from_secs(10)).unwrap();
    c.write(0, &pattern(4096, 5)).unwrap();
    let mut b = vec![0u8; 4096];
    c.read(0, &mut b).unwrap();
    assert_eq!(b, pattern(4096, 5));
    drop(c);
    let ctl = t.control();
    assert_eq!(ctl["tags"]["6"]["bytes"], 4096, "{ctl:#}");
    assert_eq!(ctl["tags"]["2"]["bytes"], 4096, "{ctl:#}");
    // The tagged view shows in the session once used.
    let mut v = NbdIo::connect(&nbd_addr, "lun0@tag0", Duration::from_secs(10)).unwrap();
    v.write(0, &pattern(512, 1)).unwrap();
    drop(v);
    let s: Value = serde_json::from_str(&ok(iscsi(&["session", "--json"]), "session")).unwrap();
    assert_eq!(
        s[0]["luns"][0]["tagged_exports"][0]["name"], "lun0@tag0",
        "{s:#}"
    );
    assert_eq!(
        t.control()["tags"]["6"]["bytes"],
        4096,
        "the untagged view adds nothing"
    );
    ok(iscsi(&["logout", "--target", T]), "logout");
}

/// The `ScsiDevice` tag API against our target: every tag 1..=7 through
/// `write_tagged`/`read_tagged` is on the wire in the CONTROL byte and
/// counted under that tag by the target; `None` is the standard CDB;
/// a `with_tags` view and the session's `io_tags` tag what they say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_api_tags_every_value() {
    use initiator::{IoTags, Portal, ScsiDevice, Session, SessionConfig};
    let t = Target::start(&["--control"]);
    let relay = Sniffer::start(t.addr);
    let mut cfg = SessionConfig::new(
        Portal::parse(&relay.addr.to_string()).unwrap(),
        T,
        "iqn.2026-01.rs.iscsi-rs:device-api",
    );
    cfg.io_tags = IoTags::new(Some(1), None).unwrap();
    let s = Session::connect(cfg).await.expect("login");
    let dev = ScsiDevice::open(&s, 0).await.expect("open LUN 0");
    assert_eq!(dev.tags(), IoTags::new(Some(1), None).unwrap());
    let _ = relay.take();

    let block = bytes::Bytes::from(pattern(512, 7));
    for tag in 1..=7u8 {
        let lba = 100 + tag as u64;
        dev.write_tagged(lba, block.clone(), false, Some(tag))
            .await
            .unwrap();
        assert_eq!(dev.read_tagged(lba, 1, Some(tag)).await.unwrap(), block);
        let cdbs = relay.take();
        let w = with_opcode(&cdbs, 0x8A);
        let r = with_opcode(&cdbs, 0x88);
        let (mut ew, mut er) = (
            cdb::write16(lba, 1, false).as_bytes().to_vec(),
            cdb::read16(lba, 1, false).as_bytes().to_vec(),
        );
        ew[15] = tag << 5;
        er[15] = tag << 5;
        assert_eq!((w, r), (vec![ew], vec![er]), "tag {tag}");
    }
    let ctl = t.control();
    for tag in 1..=7 {
        let k = tag.to_string();
        assert_eq!(ctl["tags"][&k]["commands"], 2, "tag {tag}: {ctl:#}");
        assert_eq!(ctl["tags"][&k]["bytes"], 1024, "tag {tag}: {ctl:#}");
    }

    // None: the standard CDBs, byte for byte.
    dev.write_tagged(200, block.clone(), true, None)
        .await
        .unwrap();
    dev.read_tagged(200, 1, None).await.unwrap();
    let cdbs = relay.take();
    assert_eq!(
        with_opcode(&cdbs, 0x8A),
        vec![cdb::write16(200, 1, true).as_bytes().to_vec()]
    );
    assert_eq!(
        with_opcode(&cdbs, 0x88),
        vec![cdb::read16(200, 1, false).as_bytes().to_vec()]
    );

    // The session's tags (reads 1) and a view (writes 5) on plain read/write.
    dev.read(200, 1).await.unwrap();
    dev.with_tags(IoTags::new(None, Some(5)).unwrap())
        .write(201, block.clone(), false)
        .await
        .unwrap();
    let cdbs = relay.take();
    assert_eq!(tag_of(&with_opcode(&cdbs, 0x88)[0]), Some(1));
    assert_eq!(tag_of(&with_opcode(&cdbs, 0x8A)[0]), Some(5));
    assert!(dev.write_tagged(0, block, false, Some(8)).await.is_err());
    drop(dev);
    s.logout().await.unwrap();
}
