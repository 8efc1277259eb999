//! The initiator's tracing spans, like the target's: one per connection
//! (ISID, TSIH, CID, portal) and one per command at debug level (LUN, ITT,
//! CmdSN), read from what a real subscriber prints while a session talks
//! to testbed's fake target over TCP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use initiator::{DataDirection, Portal, Session, SessionConfig};
use proto::pdu::Pdu;
use proto::scsi::cdb;
use testbed::fake_target::{FakeTarget, FakeTargetConfig};
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

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

    /// The log once a line containing all of `parts` is there (5 s at most).
    async fn wait_for(&self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.text();
            if text.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no line with {parts:?} in:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn connection_and_command_spans_carry_their_identifiers() {
    // Current-thread runtime: the session's tasks run on this thread, so
    // the thread-local subscriber sees their spans.
    let log = Captured::default();
    let w = log.clone();
    let sub = tracing_subscriber::fmt()
        .with_env_filter("initiator=debug")
        .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(sub);

    let mut t = FakeTarget::start(FakeTargetConfig::default())
        .await
        .expect("fake target");
    let portal = Portal::parse(&t.addr().to_string()).expect("portal");
    let mut cfg = SessionConfig::new(
        portal,
        "iqn.2026-01.rs.iscsi-rs:fake",
        "iqn.2026-01.rs.iscsi-rs:span-tests",
    );
    cfg.isid = Some([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]);
    cfg.login_timeout = Duration::from_secs(2);
    let s = Session::connect(cfg).await.expect("login");
    let mut c = t.accept().await.expect("logged-in connection");

    let tsih = format!("tsih={}", s.tsih());
    let portal = format!("portal={}", t.addr());
    let conn = ["conn{", "isid=80123456789a", &tsih, "cid=0", &portal];
    log.wait_for(&conn).await;
    // The login ran in the same span, before the target gave the TSIH.
    let login = ["conn{", "isid=80123456789a", "tsih=0", "cid=0", &portal];
    log.wait_for(&login).await;

    let s2 = s.clone();
    let h = tokio::spawn(async move {
        let read = cdb::read16(0, 1, false);
        s2.execute_raw(5 << 48, read.as_bytes(), DataDirection::Read(512))
            .await
    });
    let cmd = c.recv_command().await.expect("the READ");
    for p in c.data_in(&cmd, &[7u8; 512]) {
        assert!(matches!(p, Pdu::DataIn(_) | Pdu::ScsiResponse(_)));
        c.send(p).await.expect("send");
    }
    let r = tokio::time::timeout(Duration::from_secs(10), h)
        .await
        .expect("the READ finishes")
        .expect("task");
    assert_eq!(r.expect("READ").data.len(), 512);

    // The span closes when the command is done, with what was recorded.
    let itt = format!("itt={}", cmd.itt);
    let cmd_sn = format!("cmdsn={}", cmd.cmd_sn);
    let lun = format!("lun={}", 5u64 << 48);
    log.wait_for(&["cmd{", &lun, &itt, &cmd_sn, "close"]).await;
    drop(s);
}
