//! Text requests the target cannot serve as asked (RFC 7143 §6.2, §11.10,
//! §13, Appendix C), in discovery and normal sessions, through a raw
//! initiator and through libiscsi's `iscsi-ls`. The answers:
//!
//! - an unknown key: `key=NotUnderstood` (RFC 7143 §6.2: "the responder
//!   MUST answer with key=NotUnderstood"), the session goes on;
//! - `SendTargets=` with a value that names no target (malformed, unknown,
//!   or hidden from this initiator by the ACL): an empty final Text
//!   Response, the same for all three so the answer does not reveal hidden
//!   targets; libiscsi and our initiator read it as "no targets";
//! - a Text Request with no keys: an empty final Text Response;
//! - a SendTargets answer holds TargetName and TargetAddress keys only
//!   (libiscsi fails the exchange on any other key and reconnects to send
//!   it again).

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{isid, start_targets, target_config, Conn, INITIATOR};
use iscsi_target::config::SessionLimits;
use proto::pdu::{Pdu, TextRequest, RESERVED_TAG};

const T: &str = "iqn.2024-01.rs.iscsi:test.text";
const HIDDEN: &str = "iqn.2024-01.rs.iscsi:test.hidden";

async fn server() -> iscsi_target::server::Server {
    let mut visible = target_config(T, &["mem:1M"], SessionLimits::default());
    visible.alias = Some("text test disk".into());
    let mut hidden = target_config(HIDDEN, &["mem:1M"], SessionLimits::default());
    hidden.allow = vec!["iqn.2024-01.rs.iscsi:someone-else".into()];
    assert_ne!(INITIATOR, hidden.allow[0]);
    start_targets(vec![visible, hidden]).await
}

/// One Text Request with `data`; the Text Response's (final, text).
async fn text(c: &mut Conn, data: &'static [u8]) -> (bool, String) {
    let itt = c.next_itt();
    c.send(Pdu::TextRequest(TextRequest {
        immediate: true,
        final_: true,
        continue_: false,
        lun: 0,
        itt,
        ttt: RESERVED_TAG,
        cmd_sn: c.cmd_sn,
        exp_stat_sn: c.exp_stat_sn,
        data: Bytes::from_static(data),
    }))
    .await;
    match c.recv_timeout(Duration::from_secs(5)).await {
        Some(Ok(Pdu::TextResponse(r))) => {
            assert_eq!(r.itt, itt);
            assert!(!r.continue_, "short answers fit one PDU");
            (r.final_, String::from_utf8(r.data.to_vec()).expect("UTF-8"))
        }
        other => panic!("expected a Text Response to {data:?}, got {other:?}"),
    }
}

async fn malformed_requests_get_answers(c: &mut Conn) {
    assert_eq!(
        text(c, b"SendTargetsPlease=All\0").await,
        (true, "SendTargetsPlease=NotUnderstood\0".into())
    );
    for q in [
        &b"SendTargets=bogus\0"[..],
        b"SendTargets=iqn.2024-01.rs.iscsi:no-such-target\0",
        b"SendTargets=iqn.2024-01.rs.iscsi:test.hidden\0",
    ] {
        let q: &'static [u8] = q;
        assert_eq!(text(c, q).await, (true, String::new()), "{q:?}");
    }
    assert_eq!(text(c, b"").await, (true, String::new()), "no keys");
}

#[tokio::test]
async fn discovery_session_answers_and_keeps_going() {
    let s = server().await;
    let addr = s.local_addrs()[0];
    let mut d = Conn::login(addr, None, isid(1), 0, 0).await.unwrap();
    malformed_requests_get_answers(&mut d).await;
    // Still serving: SendTargets=All lists the visible target only, with
    // TargetName/TargetAddress keys only (no TargetAlias).
    let (fin, all) = text(&mut d, b"SendTargets=All\0").await;
    assert!(fin);
    assert!(
        all.starts_with(&format!("TargetName={T}\0TargetAddress=")),
        "{all:?}"
    );
    assert!(
        !all.contains(HIDDEN) && !all.contains("TargetAlias"),
        "{all:?}"
    );
    d.logout().await.unwrap();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn normal_session_answers_and_keeps_going() {
    let s = server().await;
    let mut c = Conn::login(s.local_addrs()[0], Some(T), isid(2), 0, 0)
        .await
        .unwrap();
    malformed_requests_get_answers(&mut c).await;
    let (_, own) = text(&mut c, b"SendTargets=\0").await;
    assert!(own.starts_with(&format!("TargetName={T}\0")), "{own:?}");
    // The session still carries SCSI commands.
    let r = c.command(0, &[0u8; 6], &[], 0).await.unwrap();
    assert_eq!(r.status, 0, "TEST UNIT READY after the Text exchanges");
    c.logout().await.unwrap();
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// libiscsi's discovery (`iscsi-ls`) against a target with an alias: it
/// must list the target and finish, not fail on an extra key and
/// reconnect. Bounded by `timeout`.
#[tokio::test]
async fn libiscsi_discovery_lists_a_target_with_an_alias() {
    if Command::new("iscsi-ls").arg("--help").output().is_err() {
        eprintln!("SKIP: iscsi-ls not installed (libiscsi-bin, scripts/install-deps.sh)");
        return;
    }
    let s = server().await;
    let url = format!("iscsi://{}", s.local_addrs()[0]);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["20", "iscsi-ls", "-i", INITIATOR, &url])
            .output()
            .expect("run iscsi-ls")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "iscsi-ls failed ({:?}): {stdout} {stderr}",
        out.status
    );
    assert!(stdout.contains(T), "{stdout}");
    assert!(!stdout.contains(HIDDEN), "{stdout}");
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}
