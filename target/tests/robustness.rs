//! Robustness of the target against bad peers, over real sockets.
//!
//! Every test runs a *healthy* session doing continuous verified WRITE /
//! READ I/O on LUN 0 while other connections misbehave: garbage before
//! login, a DataSegmentLength far beyond MaxRecvDataSegmentLength
//! (RFC 7143 §13.12), malformed Login Requests (§6, §11.12, status codes
//! §11.13.5), protocol errors in the full-feature phase (Reject §11.17,
//! CmdSN window §4.2.2.1, Data-Out §11.7, TMF §11.5/§11.6), abandoned
//! logins (login timeout) and a peer that never drains its socket. For each
//! case we check that the bad connection gets the right answer, that the
//! healthy session keeps going (no stall: each of its operations finishes
//! in bounded time) and that every byte it wrote reads back, and that no
//! task of the in-process target panicked (a process-wide panic hook
//! records panics from any thread, including spawned tokio tasks).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{isid, start_server, Conn, Rng, INITIATOR};
use iscsi_target::config::SessionLimits;
use iscsi_target::server::Server;
use proto::login::LoginStatus;
use proto::pdu::{
    DataOut, DigestConfig, Isid, LoginRequest, NopOut, Pdu, RejectReason, ScsiCommand,
    SnackRequest, Stage, TaskAttr, TaskMgmtRequest, TmfFunction, TmfResponse, RESERVED_TAG,
};
use proto::serial::{CmdSn, DataSn, SerialNumber, StatSn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const T: &str = "iqn.2024-01.rs.iscsi:test.robust";
const BS: usize = 512;
/// Blocks of LUN 0 the healthy session owns.
const HEALTHY_BLOCKS: u32 = 4096;
/// Longest a single healthy WRITE + READ pair may take: anything longer is
/// a stall caused by the bad peers.
const MAX_OP_LATENCY: Duration = Duration::from_secs(2);
const SHORT: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------- panics

static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Held by the parts of the tests that allocate a lot or measure RSS, so
/// that the RSS checks only see their own test.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static HOOK: Once = Once::new();

/// Record every panic of the process (target tasks run in-process), then
/// let the default hook print it.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current()
                .name()
                .unwrap_or("<unnamed>")
                .to_string();
            PANICS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("[{thread}] {info}"));
            prev(info);
        }));
    });
}

fn assert_no_panics() {
    // Copy first: the hook takes the same lock when the assertion fails.
    let p = PANICS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(p.is_empty(), "panics recorded: {p:#?}");
}

// ---------------------------------------------------------------- process

/// Resident set size of this process, in KiB (/proc/self/status VmRSS).
/// Resident memory in KiB, after handing the allocator's free pages back to
/// the kernel: glibc keeps freed memory in per-thread arenas, so without the
/// trim the figure depends on which worker threads happened to run the
/// test's allocations (it failed under load with nothing leaked), not on
/// what is still live.
fn rss_kib() -> u64 {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has
    // no preconditions and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

// ---------------------------------------------------------------- healthy I/O

struct Healthy {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<(u64, Duration), String>>,
}

impl Healthy {
    /// Log in and start random verified writes/reads on LUN 0, blocks
    /// `0..HEALTHY_BLOCKS`.
    async fn start(addr: SocketAddr, seed: u64) -> Healthy {
        let mut c = Conn::login(addr, Some(T), isid(200), 0, 0)
            .await
            .expect("healthy login");
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (stop2, ops2) = (stop.clone(), ops.clone());
        let task = tokio::spawn(async move {
            let mut rng = Rng(seed);
            let mut model = vec![0u8; HEALTHY_BLOCKS as usize * BS];
            let mut max_latency = Duration::ZERO;
            while !stop2.load(Ordering::Acquire) {
                let blocks = 1 + rng.below(64) as u32;
                let lba = rng.below(u64::from(HEALTHY_BLOCKS - blocks + 1)) as u32;
                let mut data = vec![0u8; blocks as usize * BS];
                rng.fill(&mut data);
                let t0 = Instant::now();
                let w = c.write10(lba, &data).await?;
                if w.status != 0 {
                    return Err(format!("healthy WRITE failed: {:?}", w.sense));
                }
                let off = lba as usize * BS;
                model[off..off + data.len()].copy_from_slice(&data);
                let r = c.read10(lba, blocks as u16).await?;
                if r.status != 0 || r.data != data {
                    return Err(format!("healthy read-back mismatch at LBA {lba}"));
                }
                max_latency = max_latency.max(t0.elapsed());
                ops2.fetch_add(1, Ordering::AcqRel);
            }
            // Everything written is still there.
            let mut lba = 0;
            while lba < HEALTHY_BLOCKS {
                let n = 128.min(HEALTHY_BLOCKS - lba);
                let r = c.read10(lba, n as u16).await?;
                let off = lba as usize * BS;
                if r.status != 0 || r.data != model[off..off + n as usize * BS] {
                    return Err(format!(
                        "final verify mismatch in blocks {lba}..{}",
                        lba + n
                    ));
                }
                lba += n;
            }
            c.logout().await?;
            Ok((ops2.load(Ordering::Acquire), max_latency))
        });
        Healthy { stop, ops, task }
    }

    /// Wait until the healthy session has completed `n` more operations.
    async fn expect_progress(&self, n: u64, within: Duration, what: &str) {
        let start = self.ops.load(Ordering::Acquire);
        let deadline = Instant::now() + within;
        while self.ops.load(Ordering::Acquire) < start + n {
            assert!(
                !self.task.is_finished(),
                "healthy session ended early ({what})"
            );
            assert!(
                Instant::now() < deadline,
                "healthy session stalled during: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop, verify the whole region, log out; returns the operation count.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        let (ops, max_latency) = self
            .task
            .await
            .expect("healthy task panicked")
            .expect("healthy session failed");
        assert!(
            max_latency < MAX_OP_LATENCY,
            "a healthy WRITE+READ took {max_latency:?}"
        );
        ops
    }
}

// ---------------------------------------------------------------- raw helpers

fn limits() -> SessionLimits {
    SessionLimits {
        login_timeout: Duration::from_secs(5),
        nop_interval: None,
        ..SessionLimits::default()
    }
}

async fn server(luns: &[&str], limits: SessionLimits) -> Server {
    install_panic_hook();
    start_server(T, luns, limits).await
}

/// Read (and discard) until the peer closes; true if it did within `d`.
async fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
    let mut b = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Write `total` bytes of garbage after `head`; returns how many bytes the
/// socket accepted before the peer closed it (or `total` if it never did).
async fn push_garbage(s: &mut TcpStream, head: &[u8], total: usize, rng: &mut Rng) -> usize {
    if s.write_all(head).await.is_err() {
        return 0;
    }
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        rng.fill(&mut chunk);
        let n = chunk.len().min(total - sent);
        match tokio::time::timeout(Duration::from_secs(3), s.write_all(&chunk[..n])).await {
            Ok(Ok(())) => sent += n,
            // Closed by the target, or it stopped reading (window full).
            Ok(Err(_)) | Err(_) => return sent,
        }
    }
    sent
}

/// A 48-byte BHS with the given opcode byte and DataSegmentLength.
fn bhs(opcode_byte: u8, flags: u8, dsl: u32) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0] = opcode_byte;
    b[1] = flags;
    b[5..8].copy_from_slice(&dsl.to_be_bytes()[1..]);
    b
}

fn text(pairs: &[(&str, &str)]) -> Bytes {
    let mut b = BytesMut::new();
    for (k, v) in pairs {
        b.put_slice(k.as_bytes());
        b.put_u8(b'=');
        b.put_slice(v.as_bytes());
        b.put_u8(0);
    }
    b.freeze()
}

#[allow(clippy::too_many_arguments)]
fn login_request(
    isid: Isid,
    csg: Stage,
    nsg: Stage,
    transit: bool,
    continue_: bool,
    version: (u8, u8),
    data: Bytes,
) -> LoginRequest {
    LoginRequest {
        transit,
        continue_,
        csg,
        nsg,
        version_max: version.0,
        version_min: version.1,
        isid,
        tsih: 0,
        itt: 0x10,
        cid: 0,
        cmd_sn: CmdSn::new(1),
        exp_stat_sn: StatSn::new(0),
        data,
    }
}

/// Send one Login Request on a fresh connection; the response (if any).
async fn one_login(addr: SocketAddr, req: LoginRequest) -> (TcpStream, Result<Pdu, String>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let enc = Pdu::LoginRequest(req).encode(DigestConfig::NONE);
    s.write_all(&enc.to_bytes()).await.expect("write login");
    let mut buf = BytesMut::new();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        common::read_pdu(&mut s, &mut buf, DigestConfig::NONE),
    )
    .await
    .unwrap_or_else(|_| Err("no Login Response within 3 s".into()));
    (s, r)
}

/// The Login Response must carry `want` (RFC 7143 §11.13.5) and the
/// target must then close the connection.
async fn expect_login_status(addr: SocketAddr, req: LoginRequest, want: LoginStatus, what: &str) {
    let (mut s, r) = one_login(addr, req).await;
    let Ok(Pdu::LoginResponse(resp)) = r else {
        panic!("{what}: expected a Login Response, got {r:?}")
    };
    assert_eq!(
        (resp.status_class, resp.status_detail),
        (want.class, want.detail),
        "{what}: wrong login status"
    );
    assert!(!resp.transit, "{what}: error response with T=1");
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "{what}: connection left open after a login reject"
    );
}

fn initiator_keys<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("InitiatorName", INITIATOR),
        ("TargetName", T),
        ("SessionType", "Normal"),
        ("AuthMethod", "None"),
    ]
}

/// A SCSI Command for `c` (takes a CmdSN unless immediate).
fn scsi(c: &mut Conn, lun: u64, itt: u32, cdb: &[u8], edtl: u32, rw: (bool, bool)) -> Pdu {
    let p = Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_: true,
        read: rw.0,
        write: rw.1,
        attr: TaskAttr::SIMPLE,
        lun,
        itt,
        expected_data_transfer_length: edtl,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        cdb: Bytes::copy_from_slice(cdb),
        bidi_read_length: None,
        data: Bytes::new(),
    });
    c.cmd_sn = c.cmd_sn.wrapping_add(1);
    p
}

fn write10_cdb(lba: u32, blocks: u16) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

/// (sense key, ASC) of fixed or descriptor sense data.
fn key_asc(s: &[u8]) -> Option<(u8, u8)> {
    match s.first()? & 0x7f {
        0x70 | 0x71 => Some((s.get(2)? & 0x0f, *s.get(12)?)),
        0x72 | 0x73 => Some((s.get(1)? & 0x0f, *s.get(2)?)),
        _ => None,
    }
}

/// Next PDU that is not a NOP-In ping.
async fn recv(c: &mut Conn) -> Pdu {
    loop {
        match c.recv_timeout(Duration::from_secs(3)).await {
            Some(Ok(Pdu::NopIn(n))) if n.itt == RESERVED_TAG => continue,
            Some(Ok(p)) => return p,
            other => panic!("no PDU from the target: {other:?}"),
        }
    }
}

async fn expect_reject(c: &mut Conn, reason: RejectReason, itt: u32, what: &str) {
    match recv(c).await {
        Pdu::Reject(r) => {
            assert_eq!(r.reason, reason, "{what}: wrong Reject reason");
            // RFC 7143 §11.17: the data segment is the rejected header.
            assert!(r.data.len() >= 48, "{what}: Reject without the header");
            assert_eq!(
                u32::from_be_bytes([r.data[16], r.data[17], r.data[18], r.data[19]]),
                itt,
                "{what}: Reject carries another header"
            );
        }
        other => panic!("{what}: expected Reject, got {:?}", other.opcode()),
    }
}

/// A SCSI Response for `itt` with CHECK CONDITION and this sense key/ASC.
async fn expect_check(c: &mut Conn, itt: u32, key: u8, asc: u8, what: &str) {
    match recv(c).await {
        Pdu::ScsiResponse(r) => {
            assert_eq!(r.itt, itt, "{what}: response for another task");
            assert_eq!(r.status, 0x02, "{what}: expected CHECK CONDITION");
            let sense = r.sense().expect("sense data");
            assert_eq!(key_asc(&sense), Some((key, asc)), "{what}: wrong sense");
        }
        other => panic!("{what}: expected SCSI Response, got {:?}", other.opcode()),
    }
}

async fn expect_silence(c: &mut Conn, what: &str) {
    if let Some(r) = c.recv_timeout(SHORT).await {
        match r {
            Ok(Pdu::NopIn(n)) if n.itt == RESERVED_TAG => {}
            Ok(p) => panic!("{what}: unexpected {:?}", p.opcode()),
            Err(e) => panic!("{what}: connection dropped: {e}"),
        }
    }
}

/// The connection still serves commands (TEST UNIT READY on `lun`).
async fn still_works(c: &mut Conn, lun: u64, what: &str) {
    let r = c
        .command(lun, &[0u8; 6], &[], 0)
        .await
        .unwrap_or_else(|e| panic!("{what}: connection broken: {e}"));
    assert!(
        r.status == 0 || r.status == 2,
        "{what}: status {}",
        r.status
    );
}

// ================================================================ tests

/// (1) random bytes before login and (2) a BHS announcing 16 MiB - 1 of
/// data, before and after login: the target closes those connections
/// without buffering the announced segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_segments_drop_only_the_offender() {
    let s = server(&["mem:8M"], limits()).await;
    let addr = s.local_addrs()[0];
    let healthy = Healthy::start(addr, 0x5eed_0001).await;
    let mut rng = Rng(0xbad_c0ffee);

    // (1) Garbage instead of a Login Request: no valid PDU can be decoded,
    // the connection is closed long before the 5 s login timeout.
    for i in 0..8 {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let mut g = vec![0u8; 4096];
        rng.fill(&mut g);
        // Some samples start like a Login Request so decoding gets further.
        if i % 2 == 1 {
            g[0] = 0x43;
        }
        let _ = sock.write_all(&g).await;
        assert!(
            closed_within(&mut sock, Duration::from_secs(2)).await,
            "garbage connection {i} not closed"
        );
    }
    healthy
        .expect_progress(3, Duration::from_secs(3), "garbage before login")
        .await;

    // (2) DataSegmentLength 16 MiB - 1: beyond MaxRecvDataSegmentLength
    // (8192 during login, RFC 7143 §13.12), so the header cannot be
    // trusted. Nothing may be allocated for it and the connection drops.
    let heavy = HEAVY.lock().await;
    let rss_before = rss_kib();
    for _ in 0..2 {
        // Header then nothing.
        let mut sock = TcpStream::connect(addr).await.unwrap();
        sock.write_all(&bhs(0x43, 0x87, 0x00ff_ffff)).await.unwrap();
        assert!(
            closed_within(&mut sock, Duration::from_secs(2)).await,
            "oversized login PDU: connection not closed"
        );
        // Header then 16 MiB of garbage: the target stops reading early.
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let sent = push_garbage(&mut sock, &bhs(0x43, 0x87, 0x00ff_ffff), 16 << 20, &mut rng).await;
        assert!(sent < 16 << 20, "target swallowed a 16 MiB login segment");
    }
    // The same after login, with MaxRecvDataSegmentLength 256 KiB: a SCSI
    // Command (and a NOP-Out) announcing 16 MiB - 1.
    for (n, op) in [(0u8, 0x01u8), (1, 0x40)] {
        let c = Conn::login(addr, Some(T), isid(10 + n), 0, 0)
            .await
            .unwrap();
        let mut sock = c.stream;
        let sent = push_garbage(&mut sock, &bhs(op, 0x80, 0x00ff_ffff), 16 << 20, &mut rng).await;
        assert!(sent < 16 << 20, "target swallowed a 16 MiB data segment");
        assert!(closed_within(&mut sock, Duration::from_secs(2)).await);
    }
    let rss_after = rss_kib();
    // 4 × 16 MiB would have been buffered by a target that trusted the
    // length; allow generous noise from the other tests of this binary.
    assert!(
        rss_after < rss_before + 40 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    drop(heavy);
    healthy
        .expect_progress(3, Duration::from_secs(3), "oversized segments")
        .await;

    // Garbage on a logged-in connection: Rejects or a drop, never a panic.
    for n in 0..4u8 {
        let mut c = Conn::login(addr, Some(T), isid(20 + n), 0, 0)
            .await
            .unwrap();
        let mut g = vec![0u8; 2048];
        rng.fill(&mut g);
        let _ = c.stream.write_all(&g).await;
        // Whatever comes back must decode; stop at silence or close.
        while let Some(Ok(_)) = c.recv_timeout(SHORT).await {}
    }
    healthy
        .expect_progress(3, Duration::from_secs(3), "garbage after login")
        .await;
    assert!(healthy.finish().await > 0);
    assert_no_panics();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// (3) Malformed Login Requests get the RFC 7143 §11.13.5 status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_logins_get_the_right_status() {
    let s = server(&["mem:8M"], limits()).await;
    let addr = s.local_addrs()[0];
    let healthy = Healthy::start(addr, 0x5eed_0002).await;
    let sec = Stage::SecurityNegotiation;
    let op = Stage::LoginOperationalNegotiation;

    // No InitiatorName: 0x0207 "missing parameter".
    let keys = text(&[
        ("TargetName", T),
        ("SessionType", "Normal"),
        ("AuthMethod", "None"),
    ]);
    let req = login_request(isid(30), sec, op, true, false, (0, 0), keys);
    expect_login_status(
        addr,
        req,
        LoginStatus::MISSING_PARAMETER,
        "no InitiatorName",
    )
    .await;

    // Version-min above ours (0x00): 0x0205 "unsupported version".
    let req = login_request(
        isid(31),
        sec,
        op,
        true,
        false,
        (0x22, 0x20),
        text(&initiator_keys()),
    );
    expect_login_status(addr, req, LoginStatus::UNSUPPORTED_VERSION, "bogus version").await;

    // CSG = 2 is reserved (RFC 7143 §11.12.3): initiator error 0x0200.
    let req = login_request(
        isid(32),
        Stage::Reserved,
        Stage::FullFeaturePhase,
        true,
        false,
        (0, 0),
        text(&initiator_keys()),
    );
    expect_login_status(addr, req, LoginStatus::INITIATOR_ERROR, "CSG=2").await;

    // T=1 with NSG below CSG, and T and C both set: initiator error.
    let req = login_request(
        isid(33),
        op,
        sec,
        true,
        false,
        (0, 0),
        text(&initiator_keys()),
    );
    expect_login_status(addr, req, LoginStatus::INITIATOR_ERROR, "NSG < CSG").await;
    let req = login_request(
        isid(34),
        sec,
        op,
        true,
        true,
        (0, 0),
        text(&initiator_keys()),
    );
    expect_login_status(addr, req, LoginStatus::INITIATOR_ERROR, "T and C").await;

    // Unknown target: 0x0203 "not found"; a target name that is not even
    // an iSCSI name as well.
    let keys = text(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", "iqn.2024-01.rs.iscsi:nope"),
    ]);
    let req = login_request(isid(35), sec, op, true, false, (0, 0), keys);
    expect_login_status(addr, req, LoginStatus::NOT_FOUND, "unknown target").await;

    // A negotiated operational key out of range (RFC 7143 §13.14
    // MaxBurstLength: 512 to 2^24-1): answered "key=Reject" (RFC 7143
    // §6.2), the login itself goes on.
    let mut keys = initiator_keys();
    keys.retain(|(k, _)| *k != "AuthMethod");
    keys.push(("MaxBurstLength", "3"));
    let req = login_request(
        isid(36),
        op,
        Stage::FullFeaturePhase,
        true,
        false,
        (0, 0),
        text(&keys),
    );
    let (sock, r) = one_login(addr, req).await;
    let Ok(Pdu::LoginResponse(resp)) = r else {
        panic!("out-of-range key: {r:?}")
    };
    assert_eq!(
        (resp.status_class, resp.status_detail),
        (0, 0),
        "out-of-range negotiated key refused the login"
    );
    let answer = String::from_utf8_lossy(&resp.data);
    assert!(
        answer.contains("MaxBurstLength=Reject\0"),
        "out-of-range MaxBurstLength not rejected: {answer:?}"
    );
    drop(sock);
    // A declarative key cannot be answered "Reject": an illegal
    // MaxRecvDataSegmentLength declaration (§13.12) fails the login.
    let mut keys = initiator_keys();
    keys.retain(|(k, _)| *k != "AuthMethod");
    keys.push(("MaxRecvDataSegmentLength", "99999999999999999999"));
    let req = login_request(
        isid(38),
        op,
        Stage::FullFeaturePhase,
        true,
        false,
        (0, 0),
        text(&keys),
    );
    expect_login_status(
        addr,
        req,
        LoginStatus::INITIATOR_ERROR,
        "illegal declaration",
    )
    .await;

    // A continued (C=1) text that never ends: accumulation is bounded
    // (64 KiB), then the login fails with an initiator error.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    let junk = format!("X-com.example.junk={}\0", "j".repeat(8000));
    let mut refused = None;
    for i in 0..20 {
        let req = login_request(
            isid(37),
            sec,
            op,
            false,
            true,
            (0, 0),
            Bytes::from(junk.clone()),
        );
        if sock
            .write_all(&Pdu::LoginRequest(req).encode(DigestConfig::NONE).to_bytes())
            .await
            .is_err()
        {
            break;
        }
        match common::read_pdu(&mut sock, &mut buf, DigestConfig::NONE).await {
            Ok(Pdu::LoginResponse(r)) if r.status_class == 0 => {
                // RFC 7143 §11.12.2: each C=1 PDU is answered empty.
                assert!(r.data.is_empty() && !r.transit && !r.continue_);
            }
            Ok(Pdu::LoginResponse(r)) => {
                refused = Some((i, r.status_class, r.status_detail));
                break;
            }
            other => panic!("endless text: unexpected {other:?}"),
        }
    }
    let (i, class, detail) = refused.expect("endless continued text accepted");
    assert!((8..=9).contains(&i), "refused after {i} PDUs of 8 KB");
    let want = LoginStatus::INITIATOR_ERROR;
    assert_eq!((class, detail), (want.class, want.detail));
    assert!(closed_within(&mut sock, Duration::from_secs(2)).await);

    // A Login Request that is not the first PDU kind expected: a SCSI
    // Command before login closes the connection.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&bhs(0x01, 0x80, 0)).await.unwrap();
    assert!(closed_within(&mut sock, Duration::from_secs(2)).await);

    healthy
        .expect_progress(3, Duration::from_secs(3), "bad logins")
        .await;
    assert!(healthy.finish().await > 0);
    // The failed logins left no session behind (only the healthy one,
    // now logged out, and possibly the out-of-range one whose socket is
    // closed).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.shared().sessions.len(), 0, "sessions left behind");
    assert_no_panics();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// (4) Protocol errors in the full-feature phase: each gets its Reject,
/// CHECK CONDITION or silence, and the connection keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_feature_errors_are_answered_and_contained() {
    let s = server(&["mem:8M", "mem:1M"], limits()).await;
    let addr = s.local_addrs()[0];
    let healthy = Healthy::start(addr, 0x5eed_0003).await;
    let mut c = Conn::login(addr, Some(T), isid(40), 0, 0).await.unwrap();
    let lun1 = 0x0001_0000_0000_0000u64;
    c.clear_unit_attention().await.unwrap();
    still_works(&mut c, lun1, "LUN 1").await;
    // Known content on LUN 1, blocks 100..108.
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    let cdb = write10_cdb(100, 8);
    assert_eq!(c.command(lun1, &cdb, &pattern, 0).await.unwrap().status, 0);

    // A LUN that does not exist: ILLEGAL REQUEST, LOGICAL UNIT NOT
    // SUPPORTED (SPC-5 §5.3; 0x05/0x25).
    let itt = c.next_itt();
    let p = scsi(
        &mut c,
        0x0042_0000_0000_0000,
        itt,
        &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        512,
        (true, false),
    );
    c.send(p).await;
    expect_check(&mut c, itt, 0x05, 0x25, "bogus LUN").await;

    // Data-Out with a Target Transfer Tag we never issued: the write ends
    // with CHECK CONDITION (ABORTED COMMAND, DATA PHASE ERROR) and writes
    // nothing.
    let itt = c.next_itt();
    let p = scsi(&mut c, lun1, itt, &write10_cdb(100, 8), 4096, (false, true));
    c.send(p).await;
    let Pdu::R2t(r2t) = recv(&mut c).await else {
        panic!("expected R2T")
    };
    let dout = |ttt, off: u32, len: usize, sn: u32, exp_stat_sn| {
        Pdu::DataOut(DataOut {
            final_: true,
            lun: lun1,
            itt,
            ttt,
            exp_stat_sn,
            data_sn: DataSn::new(sn),
            buffer_offset: off,
            data: Bytes::from(vec![0xee; len]),
        })
    };
    c.send(dout(r2t.ttt ^ 0x5a5a, 0, 4096, 0, c.exp_stat_sn))
        .await;
    expect_check(&mut c, itt, 0x0b, 0x4b, "unknown TTT").await;
    // Later Data-Out for that task is discarded silently (RFC 7143 §11.7).
    c.send(dout(r2t.ttt, 0, 4096, 0, c.exp_stat_sn)).await;
    expect_silence(&mut c, "Data-Out after the task failed").await;

    // Data-Out beyond EDTL (and beyond the R2T's desired length).
    let itt = c.next_itt();
    let p = scsi(&mut c, lun1, itt, &write10_cdb(100, 8), 4096, (false, true));
    c.send(p).await;
    let Pdu::R2t(r2t) = recv(&mut c).await else {
        panic!("expected R2T")
    };
    let p = Pdu::DataOut(DataOut {
        final_: true,
        lun: lun1,
        itt,
        ttt: r2t.ttt,
        exp_stat_sn: c.exp_stat_sn,
        data_sn: DataSn::new(0),
        buffer_offset: 0,
        data: Bytes::from(vec![0xdd; 4096 + 512]),
    });
    c.send(p).await;
    expect_check(&mut c, itt, 0x0b, 0x4b, "Data-Out beyond EDTL").await;
    // Data-Out at an offset past EDTL for a fresh write.
    let itt = c.next_itt();
    let p = scsi(&mut c, lun1, itt, &write10_cdb(100, 8), 4096, (false, true));
    c.send(p).await;
    let Pdu::R2t(r2t) = recv(&mut c).await else {
        panic!("expected R2T")
    };
    let p = Pdu::DataOut(DataOut {
        final_: true,
        lun: lun1,
        itt,
        ttt: r2t.ttt,
        exp_stat_sn: c.exp_stat_sn,
        data_sn: DataSn::new(0),
        buffer_offset: 0xffff_f000,
        data: Bytes::from(vec![0xdd; 4096]),
    });
    c.send(p).await;
    expect_check(&mut c, itt, 0x0b, 0x4b, "Data-Out offset past EDTL").await;
    // Data-Out for a task that does not exist: discarded.
    c.send(Pdu::DataOut(DataOut {
        final_: true,
        lun: lun1,
        itt: 0x7777_0000,
        ttt: 0x1234,
        exp_stat_sn: c.exp_stat_sn,
        data_sn: DataSn::new(0),
        buffer_offset: 0,
        data: Bytes::from(vec![0xcc; 512]),
    }))
    .await;
    expect_silence(&mut c, "Data-Out for an unknown ITT").await;
    // None of the failed writes touched the data.
    let r = c
        .command(lun1, &[0x28, 0, 0, 0, 0, 100, 0, 0, 8, 0], &[], 4096)
        .await
        .unwrap();
    assert_eq!(r.status, 0);
    assert!(r.data == pattern, "failed writes modified LUN 1");

    // An ITT reused while its task is in flight: Reject "task in
    // progress" (RFC 7143 §11.17.1), the original task completes.
    let itt = c.next_itt();
    let p = scsi(&mut c, lun1, itt, &write10_cdb(100, 8), 4096, (false, true));
    c.send(p).await;
    let Pdu::R2t(r2t) = recv(&mut c).await else {
        panic!("expected R2T")
    };
    let p = scsi(&mut c, lun1, itt, &[0u8; 6], 0, (false, false));
    c.send(p).await;
    expect_reject(&mut c, RejectReason::TASK_IN_PROGRESS, itt, "ITT reuse").await;
    let new: Vec<u8> = pattern.iter().map(|b| b ^ 0xff).collect();
    c.send(Pdu::DataOut(DataOut {
        final_: true,
        lun: lun1,
        itt,
        ttt: r2t.ttt,
        exp_stat_sn: c.exp_stat_sn,
        data_sn: DataSn::new(0),
        buffer_offset: 0,
        data: Bytes::from(new.clone()),
    }))
    .await;
    match recv(&mut c).await {
        Pdu::ScsiResponse(r) => assert_eq!((r.itt, r.status), (itt, 0)),
        other => panic!("reused-ITT write: {:?}", other.opcode()),
    }
    let r = c
        .command(lun1, &[0x28, 0, 0, 0, 0, 100, 0, 0, 8, 0], &[], 4096)
        .await
        .unwrap();
    assert!(r.data == new, "write after ITT reuse lost");

    // CmdSN far outside the window (ahead and behind): silently ignored
    // (RFC 7143 §4.2.2.1), the window is unaffected.
    for delta in [0x4000_0000u32, 0x8000_0001, 0xffff_fc00] {
        let itt = c.next_itt();
        let mut p = scsi(&mut c, lun1, itt, &[0u8; 6], 0, (false, false));
        c.cmd_sn = c.cmd_sn.wrapping_sub(1);
        if let Pdu::ScsiCommand(cmd) = &mut p {
            cmd.cmd_sn = c.cmd_sn.wrapping_add(delta);
        }
        c.send(p).await;
        expect_silence(&mut c, "CmdSN outside the window").await;
    }
    still_works(&mut c, lun1, "after out-of-window CmdSNs").await;

    // TMF with functions that do not exist: "Function rejected" (0xff).
    for f in [0u8, 9, 15, 0x42, 0x7f] {
        let itt = c.next_itt();
        c.send(Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: TmfFunction(f),
            lun: lun1,
            itt,
            referenced_task_tag: 0x1234,
            cmd_sn: c.cmd_sn,
            exp_stat_sn: c.exp_stat_sn,
            ref_cmd_sn: CmdSn::new(0),
            exp_data_sn: DataSn::new(0),
            data: Bytes::new(),
        }))
        .await;
        match recv(&mut c).await {
            Pdu::TaskMgmtResponse(r) => {
                assert_eq!(r.itt, itt);
                assert_eq!(r.response, TmfResponse::FUNCTION_REJECTED, "TMF {f:#x}");
            }
            other => panic!("TMF {f:#x}: {:?}", other.opcode()),
        }
    }

    // PDUs that have no place here: a Login Request in the full-feature
    // phase (protocol error), a SNACK at ErrorRecoveryLevel 0 (not
    // supported), a target opcode (NOP-In), SCSI data without the W bit,
    // and an AHS on a NOP-Out (invalid PDU field, RFC 7143 §11.2.2).
    let mut login = login_request(
        isid(40),
        Stage::LoginOperationalNegotiation,
        Stage::FullFeaturePhase,
        true,
        false,
        (0, 0),
        Bytes::new(),
    );
    login.itt = 0x5151;
    c.send(Pdu::LoginRequest(login)).await;
    expect_reject(&mut c, RejectReason::PROTOCOL_ERROR, 0x5151, "Login in FFP").await;
    c.send(Pdu::SnackRequest(SnackRequest {
        snack_type: proto::pdu::SnackType(0),
        lun: 0,
        itt: 0x5252,
        ttt: RESERVED_TAG,
        exp_stat_sn: c.exp_stat_sn,
        beg_run: SerialNumber::new(0),
        run_length: 0,
        data: Bytes::new(),
    }))
    .await;
    expect_reject(&mut c, RejectReason::COMMAND_NOT_SUPPORTED, 0x5252, "SNACK").await;
    let mut nop_in = bhs(0x20, 0x80, 0);
    nop_in[16..20].copy_from_slice(&0x5353u32.to_be_bytes());
    c.stream.write_all(&nop_in).await.unwrap();
    expect_reject(
        &mut c,
        RejectReason::PROTOCOL_ERROR,
        0x5353,
        "NOP-In from initiator",
    )
    .await;
    let itt = c.next_itt();
    let mut p = scsi(&mut c, lun1, itt, &[0u8; 6], 0, (false, false));
    if let Pdu::ScsiCommand(cmd) = &mut p {
        cmd.data = Bytes::from_static(&[1, 2, 3, 4]);
    }
    c.send(p).await;
    expect_reject(&mut c, RejectReason::PROTOCOL_ERROR, itt, "data without W").await;
    // NOP-Out (opcode 0x00) with the I bit (0x40).
    let mut nop = bhs(0x40, 0x80, 0);
    nop[4] = 1; // TotalAHSLength: one word
    nop[16..20].copy_from_slice(&0x5454u32.to_be_bytes());
    nop[20..24].copy_from_slice(&RESERVED_TAG.to_be_bytes());
    let mut raw = nop.to_vec();
    raw.extend_from_slice(&[0, 0, 0x7e, 0]);
    c.stream.write_all(&raw).await.unwrap();
    expect_reject(
        &mut c,
        RejectReason::INVALID_PDU_FIELD,
        0x5454,
        "AHS on NOP-Out",
    )
    .await;
    still_works(&mut c, lun1, "after misplaced PDUs").await;

    // Random CDBs of every length on LUN 1 (including a 32-byte one in an
    // extended-CDB AHS): each gets a SCSI Response, nothing hangs.
    let mut rng = Rng(0xcdb_cdb_cdb);
    for i in 0..120 {
        let len = [6usize, 10, 12, 16, 32][i % 5];
        let mut g = vec![0u8; len];
        rng.fill(&mut g);
        let r = tokio::time::timeout(Duration::from_secs(3), c.command(lun1, &g, &[], 0))
            .await
            .unwrap_or_else(|_| panic!("no answer to CDB {g:02x?}"))
            .unwrap_or_else(|e| panic!("CDB {g:02x?}: {e}"));
        assert!(
            matches!(r.status, 0x00 | 0x02 | 0x08 | 0x18),
            "CDB {g:02x?}: status {:#x}",
            r.status
        );
    }
    healthy
        .expect_progress(3, Duration::from_secs(3), "full-feature errors")
        .await;
    c.logout().await.unwrap();
    assert!(healthy.finish().await > 0);
    assert_no_panics();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// (5) 200 connections abandoned mid-login: the login timeout reclaims
/// every one of them while the healthy session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_logins_are_reclaimed() {
    let timeout = Duration::from_millis(1000);
    let s = server(
        &["mem:8M"],
        SessionLimits {
            login_timeout: timeout,
            ..limits()
        },
    )
    .await;
    let addr = s.local_addrs()[0];
    let healthy = Healthy::start(addr, 0x5eed_0005).await;
    let fds_before = open_fds();
    let mut socks = Vec::new();
    let first = text(&initiator_keys());
    for i in 0..200u32 {
        let mut sock = TcpStream::connect(addr).await.unwrap();
        let req = login_request(
            isid(i as u8),
            Stage::SecurityNegotiation,
            Stage::LoginOperationalNegotiation,
            false,
            false,
            (0, 0),
            first.clone(),
        );
        let enc = Pdu::LoginRequest(req).encode(DigestConfig::NONE).to_bytes();
        match i % 3 {
            // Part of a BHS.
            0 => sock.write_all(&enc[..20]).await.unwrap(),
            // A whole BHS, half the data segment.
            1 => sock.write_all(&enc[..48 + 10]).await.unwrap(),
            // A whole first request (answered), then nothing.
            _ => sock.write_all(&enc).await.unwrap(),
        }
        socks.push(sock);
    }
    let stalled_at = Instant::now();
    healthy
        .expect_progress(5, Duration::from_secs(3), "200 stalled logins")
        .await;
    // Every connection is closed by the target shortly after the timeout.
    let deadline = timeout + Duration::from_secs(3);
    let mut waits = Vec::new();
    for mut sock in socks {
        waits.push(tokio::spawn(async move {
            let left = deadline.saturating_sub(stalled_at.elapsed());
            closed_within(&mut sock, left).await
        }));
    }
    let mut open = 0;
    for w in waits {
        if !w.await.unwrap() {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} abandoned logins still open");
    // Their descriptors are gone on the target side too (the client
    // sockets were dropped above); slack for the other tests' sockets.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fds_after = open_fds();
    assert!(
        fds_after < fds_before + 100,
        "fds: {fds_before} before, {fds_after} after"
    );
    // A new login still works.
    let mut c = Conn::login(addr, Some(T), isid(201), 0, 0).await.unwrap();
    still_works(&mut c, 0, "login after the flood").await;
    c.logout().await.unwrap();
    assert!(healthy.finish().await > 0);
    assert_no_panics();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// Log in a session that asks for 32 MiB of Data-In and never reads it,
/// then floods immediate NOP-Outs whose answers queue up behind the
/// Data-In until the connection's outgoing queue is full.
async fn stuck_peer(addr: SocketAddr) -> Conn {
    let mut stuck = Conn::login(addr, Some(T), isid(60), 0, 0).await.unwrap();
    let lun1 = 0x0001_0000_0000_0000u64;
    stuck.clear_unit_attention().await.unwrap();
    for _ in 0..2 {
        let itt = stuck.next_itt();
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[7..9].copy_from_slice(&32768u16.to_be_bytes());
        let p = scsi(&mut stuck, lun1, itt, &cdb, 16 << 20, (true, false));
        stuck.send(p).await;
    }
    // Let the Data-In fill the socket buffers (far less than 32 MiB).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut flood = BytesMut::new();
    for i in 0..2000u32 {
        let p = Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0,
            itt: 0x10_0000 + i,
            ttt: RESERVED_TAG,
            cmd_sn: stuck.cmd_sn,
            exp_stat_sn: stuck.exp_stat_sn,
            data: Bytes::from_static(b"are you there"),
        });
        p.encode(DigestConfig::NONE).write_to(&mut flood);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), stuck.stream.write_all(&flood)).await;
    stuck
}

/// (6) A peer that never reads while the target has a big Data-In for it,
/// and keeps sending requests: only that connection waits; the healthy
/// session goes on, and shutdown still ends the stuck connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_stalls_nobody_else() {
    let _heavy = HEAVY.lock().await;
    let s = server(&["mem:8M", "mem:32M"], limits()).await;
    let addr = s.local_addrs()[0];
    let healthy = Healthy::start(addr, 0x5eed_0006).await;
    let mut stuck = stuck_peer(addr).await;
    healthy
        .expect_progress(10, Duration::from_secs(3), "peer not reading")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    healthy
        .expect_progress(10, Duration::from_secs(3), "peer not reading (later)")
        .await;
    assert!(healthy.finish().await > 0);
    // Shutdown must not wait for the stuck connection (its reader waits
    // for room in the outgoing queue; the close request must reach it).
    let t0 = Instant::now();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "shutdown took {:?} with a peer that does not read",
        t0.elapsed()
    );
    assert!(
        closed_within(&mut stuck.stream, Duration::from_secs(5)).await,
        "stuck connection never closed"
    );
    assert_no_panics();
}

/// (6b) With NOP-In pings enabled, a connection whose initiator reads
/// nothing is dropped after the ping timeout, without any shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_dropped_after_the_ping_timeout() {
    let _heavy = HEAVY.lock().await;
    let s = server(
        &["mem:8M", "mem:32M"],
        SessionLimits {
            nop_interval: Some(Duration::from_millis(200)),
            nop_timeout: Duration::from_millis(1000),
            ..limits()
        },
    )
    .await;
    let addr = s.local_addrs()[0];
    let healthy = Healthy::start(addr, 0x5eed_0007).await;
    let stuck = stuck_peer(addr).await;
    assert_eq!(s.shared().sessions.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(4);
    while s.shared().sessions.len() > 1 {
        assert!(
            Instant::now() < deadline,
            "the session that reads nothing was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    healthy
        .expect_progress(10, Duration::from_secs(3), "after the drop")
        .await;
    assert!(healthy.finish().await > 0);
    drop(stuck);
    assert_no_panics();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// Aborted writes give their buffers back: an initiator that sends most
/// of a large write, aborts it (RFC 7143 §11.5.1 ABORT TASK) and starts
/// another one, again and again, must not make the target hold every
/// partly-filled buffer until the connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_writes_do_not_pin_their_buffers() {
    let s = server(&["mem:8M", "mem:32M"], limits()).await;
    let addr = s.local_addrs()[0];
    let healthy = Healthy::start(addr, 0x5eed_0008).await;
    let mut c = Conn::login(addr, Some(T), isid(80), 0, 0).await.unwrap();
    let lun1 = 0x0001_0000_0000_0000u64;
    c.clear_unit_attention().await.unwrap();
    let seg = c.outcome.connection.max_send_data_segment_length as usize;
    let chunk = Bytes::from(vec![0x5au8; seg]);
    let heavy = HEAVY.lock().await;
    let rss_before = rss_kib();
    const ROUNDS: usize = 8;
    const SENT: u32 = 15 << 20;
    for _ in 0..ROUNDS {
        // WRITE(10) of 16 MiB, data only on R2T; send 15 MiB of it.
        let itt = c.next_itt();
        let cmd_sn = c.cmd_sn;
        let p = scsi(
            &mut c,
            lun1,
            itt,
            &write10_cdb(0, 32768),
            16 << 20,
            (false, true),
        );
        c.send(p).await;
        let mut done = 0u32;
        while done < SENT {
            let Pdu::R2t(r) = recv(&mut c).await else {
                panic!("expected R2T")
            };
            let end = r.buffer_offset + r.desired_data_transfer_length;
            let mut off = r.buffer_offset;
            let mut sn = DataSn::new(0);
            let mut batch = BytesMut::new();
            while off < end.min(SENT) {
                let n = (seg as u32).min(end - off);
                Pdu::DataOut(DataOut {
                    final_: off + n == end,
                    lun: lun1,
                    itt,
                    ttt: r.ttt,
                    exp_stat_sn: c.exp_stat_sn,
                    data_sn: sn,
                    buffer_offset: off,
                    data: chunk.slice(..n as usize),
                })
                .encode(DigestConfig::NONE)
                .write_to(&mut batch);
                off += n;
                sn = sn.successor();
            }
            c.stream.write_all(&batch).await.unwrap();
            done = off;
        }
        let titt = c.next_itt();
        c.send(Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: TmfFunction::ABORT_TASK,
            lun: lun1,
            itt: titt,
            referenced_task_tag: itt,
            cmd_sn: c.cmd_sn,
            exp_stat_sn: c.exp_stat_sn,
            ref_cmd_sn: cmd_sn,
            exp_data_sn: DataSn::new(0),
            data: Bytes::new(),
        }))
        .await;
        // The R2T for the last MiB may come first.
        loop {
            match recv(&mut c).await {
                Pdu::R2t(r) if r.itt == itt => continue,
                Pdu::TaskMgmtResponse(r) => {
                    assert_eq!((r.itt, r.response), (titt, TmfResponse::FUNCTION_COMPLETE));
                    break;
                }
                other => panic!("ABORT TASK: {:?}", other.opcode()),
            }
        }
    }
    still_works(&mut c, lun1, "after aborted writes").await;
    let rss_after = rss_kib();
    drop(heavy);
    // 8 × 15 MiB if the aborted buffers stayed; one may stay until the
    // next command.
    assert!(
        rss_after < rss_before + 48 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    healthy
        .expect_progress(3, Duration::from_secs(3), "aborted writes")
        .await;
    c.logout().await.unwrap();
    assert!(healthy.finish().await > 0);
    assert_no_panics();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}
