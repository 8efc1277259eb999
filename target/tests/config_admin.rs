//! The admin API end to end at library level: a real server on 127.0.0.1
//! port 0, the admin socket in a temporary directory, requests as JSON
//! lines. Also the bad-input cases: the daemon must keep serving.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use iscsi_target::admin::protocol::{ErrorKind, Response, ShowResult};
use iscsi_target::admin::server::{self, AdminLimits, AdminSocket, SocketError};
use iscsi_target::admin::{self, Admin};
use iscsi_target::config::IoMode;
use iscsi_target::config_file;
use iscsi_target::server::Server;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const CONFIG: &str = r#"{
  "_comment": "test",
  "targets": [{
    "name": "iqn.2024-01.org.example:admin-test",
    "portal_groups": [{"tpgt": 1, "portals": ["127.0.0.1:0"]}],
    "luns": [{"lun": 0, "backend": "mem", "size": "4M", "vendor": "TESTV"}]
  }]
}"#;

struct Daemon {
    server: Option<Server>,
    admin: Arc<Admin>,
    socket: Option<AdminSocket>,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    config: std::path::PathBuf,
}

impl Daemon {
    async fn start(limits: AdminLimits) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("target.json");
        std::fs::write(&config, CONFIG).unwrap();
        let loaded = config_file::load(&config).unwrap();
        let (server, admin) = admin::launch(loaded, Some(config.clone())).await.unwrap();
        let path = dir.path().join("admin.sock");
        let socket = server::listen(admin.clone(), &path, limits).await.unwrap();
        Daemon {
            server: Some(server),
            admin,
            socket: Some(socket),
            _dir: dir,
            path,
            config,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.socket.take() {
            s.shutdown().await;
        }
        if let Some(s) = self.server.take() {
            s.shutdown_with_grace(Duration::from_millis(10)).await;
        }
    }
}

async fn request_on(s: &mut BufReader<UnixStream>, line: &str) -> Option<Response> {
    s.get_mut().write_all(line.as_bytes()).await.ok()?;
    s.get_mut().write_all(b"\n").await.ok()?;
    let mut answer = String::new();
    let n = s.read_line(&mut answer).await.ok()?;
    if n == 0 {
        return None;
    }
    Some(serde_json::from_str(&answer).expect("response is JSON"))
}

async fn request(path: &Path, req: serde_json::Value) -> Response {
    let mut s = BufReader::new(UnixStream::connect(path).await.unwrap());
    request_on(&mut s, &req.to_string())
        .await
        .expect("an answer")
}

async fn show(path: &Path) -> ShowResult {
    let r = request(path, json!({"op": "show"})).await;
    assert!(r.ok, "{r:?}");
    serde_json::from_value(r.result.unwrap()).unwrap()
}

const T: &str = "iqn.2024-01.org.example:admin-test";

#[tokio::test]
async fn show_add_set_remove_save() {
    let d = Daemon::start(AdminLimits::default()).await;
    let mode = std::fs::metadata(&d.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket must be private");

    let s = show(&d.path).await;
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.targets.len(), 1);
    let t = &s.targets[0];
    assert_eq!(t.luns.len(), 1);
    assert_eq!(t.luns[0].vendor, "TESTV");
    assert_eq!(t.luns[0].size_bytes, 4 << 20);
    assert!(t.luns[0].io.is_some(), "every LUN has I/O counters");
    let port = s.listening[0]
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    assert_ne!(port, 0);

    // add-lun: lowest free number.
    let r = request(
        &d.path,
        json!({"op": "add-lun", "target": T, "spec": "mem:2M", "product": "SCRATCH"}),
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.result.unwrap()["lun"], 1);
    // The same number again is refused.
    let r = request(
        &d.path,
        json!({"op": "add-lun", "target": T, "lun": 1, "spec": "mem:2M"}),
    )
    .await;
    assert_eq!(r.error.unwrap().kind, ErrorKind::Refused);
    // Bad SPEC.
    let r = request(
        &d.path,
        json!({"op": "add-lun", "target": T, "spec": "mem:2M,sector=1000"}),
    )
    .await;
    assert_eq!(r.error.unwrap().kind, ErrorKind::Invalid);
    // Unknown target.
    let r = request(
        &d.path,
        json!({"op": "add-lun", "target": "iqn.2024-01.org.example:nope", "spec": "mem:2M"}),
    )
    .await;
    assert_eq!(r.error.unwrap().kind, ErrorKind::NotFound);

    // set-lun: mode and resize.
    let r = request(
        &d.path,
        json!({"op": "set-lun", "target": T, "lun": 1, "mode": "ro", "size": "8M"}),
    )
    .await;
    assert!(r.ok, "{r:?}");
    let r = request(
        &d.path,
        json!({"op": "set-lun", "target": T, "lun": 1, "size": "1M"}),
    )
    .await;
    assert_eq!(
        r.error.unwrap().kind,
        ErrorKind::Refused,
        "shrinking needs force"
    );
    let r = request(
        &d.path,
        json!({"op": "set-lun", "target": T, "lun": 1, "size": "1000"}),
    )
    .await;
    assert_eq!(
        r.error.unwrap().kind,
        ErrorKind::Invalid,
        "not a multiple of 512"
    );
    let s = show(&d.path).await;
    let l1 = &s.targets[0].luns[1];
    assert_eq!(
        (l1.mode.as_str(), l1.size_bytes, l1.product.as_str()),
        ("ro", 8 << 20, "SCRATCH")
    );

    // add-lun then remove-lun.
    let r = request(
        &d.path,
        json!({"op": "add-lun", "target": T, "lun": 7, "spec": "null:1M"}),
    )
    .await;
    assert!(r.ok, "{r:?}");
    let r = request(&d.path, json!({"op": "remove-lun", "target": T, "lun": 7})).await;
    assert!(r.ok, "{r:?}");
    let r = request(&d.path, json!({"op": "remove-lun", "target": T, "lun": 7})).await;
    assert_eq!(r.error.unwrap().kind, ErrorKind::NotFound);

    // ACL and CHAP.
    let r = request(
        &d.path,
        json!({"op": "allow", "target": T, "initiator": "iqn.2024-01.org.example:h1", "luns": [0]}),
    )
    .await;
    assert!(r.ok, "{r:?}");
    let r = request(
        &d.path,
        json!({"op": "deny", "target": T, "initiator": "iqn.2024-01.org.example:h1"}),
    )
    .await;
    assert_eq!(r.error.unwrap().kind, ErrorKind::Refused, "last ACL entry");
    let r = request(&d.path, json!({"op": "set-chap", "target": T, "add": {"user": "u", "secret": "a-long-enough-secret"}})).await;
    assert!(r.ok, "{r:?}");
    assert!(
        !serde_json::to_string(&r)
            .unwrap()
            .contains("a-long-enough-secret"),
        "no secret in responses"
    );

    // save: to the configuration file, atomically; the state comes back.
    let r = request(&d.path, json!({"op": "save"})).await;
    assert!(r.ok, "{r:?}");
    let back = config_file::load(&d.config).unwrap();
    let t = &back.server.targets[0];
    assert_eq!(t.luns.iter().map(|l| l.lun).collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(t.luns[1].mode, IoMode::ReadOnly);
    assert_eq!(
        t.portal_groups[0].portals[0].port(),
        0,
        "port 0 saved as configured"
    );
    assert_eq!(t.allow, vec!["iqn.2024-01.org.example:h1".to_string()]);
    assert_eq!(t.auth.incoming[0].user, "u");
    assert_eq!(
        back.ext.target(T).unwrap().luns[&1].product.as_deref(),
        Some("SCRATCH")
    );
    assert!(t.lun_visible("iqn.2024-01.org.example:h1", 0));
    assert!(!t.lun_visible("iqn.2024-01.org.example:h1", 1));
    let mode = std::fs::metadata(&d.config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Saving what was saved gives the same file (nothing lost, nothing added).
    let first = std::fs::read_to_string(&d.config).unwrap();
    let r = request(&d.path, json!({"op": "save"})).await;
    assert!(r.ok);
    assert_eq!(first, std::fs::read_to_string(&d.config).unwrap());

    // A short per-initiator secret is accepted with a warning, in the
    // answer, in `show` and at start-up (Admin::warnings).
    let r = request(&d.path, json!({"op": "set-chap", "target": T, "initiator": "iqn.2024-01.org.example:h1", "add": {"user": "h1", "secret": "short"}})).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.result.unwrap()["warnings"].as_array().unwrap().len(), 1);
    let w = show(&d.path).await.warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("for iqn.2024-01.org.example:h1") && w[0].contains("§9.2.1"),
        "{w:?}"
    );
    assert!(!w[0].contains("short\""), "no secret in warnings: {w:?}");
    assert_eq!(d.admin.warnings(), w);

    // add-target with its own port-0 portal, then remove it.
    let r = request(&d.path, json!({"op": "add-target", "name": "iqn.2024-01.org.example:second", "portals": ["127.0.0.1:0"], "luns": ["mem:1M"]})).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(show(&d.path).await.listening.len(), 2);
    let r = request(
        &d.path,
        json!({"op": "remove-target", "name": "iqn.2024-01.org.example:second"}),
    )
    .await;
    assert!(r.ok, "{r:?}");
    let r = request(&d.path, json!({"op": "remove-target", "name": T})).await;
    assert_eq!(r.error.unwrap().kind, ErrorKind::Refused, "last target");
    let _ = &d.admin;
    d.stop().await;
}

#[tokio::test]
async fn bad_input_leaves_the_daemon_serving() {
    let limits = AdminLimits {
        max_request: 4096,
        read_timeout: Duration::from_millis(300),
        ..AdminLimits::default()
    };
    let d = Daemon::start(limits).await;
    // Malformed JSON, unknown op, unknown member, empty line: errors, and
    // the same connection keeps working.
    let mut c = BufReader::new(UnixStream::connect(&d.path).await.unwrap());
    for bad in [
        "{not json",
        r#"{"op":"format-everything"}"#,
        r#"{"op":"show","colour":"red"}"#,
        "",
        "[1,2,3]",
    ] {
        let r = request_on(&mut c, bad).await.expect("an answer");
        assert_eq!(r.error.unwrap().kind, ErrorKind::BadRequest, "{bad}");
    }
    let r = request_on(&mut c, r#"{"op":"show"}"#).await.unwrap();
    assert!(r.ok);
    drop(c);

    // Oversize request: an error, then the connection is closed.
    let mut c = BufReader::new(UnixStream::connect(&d.path).await.unwrap());
    let big = format!("{{\"op\":\"show\",\"target\":\"{}\"}}", "x".repeat(10_000));
    let r = request_on(&mut c, &big).await;
    if let Some(r) = r {
        assert_eq!(r.error.unwrap().kind, ErrorKind::BadRequest);
    }
    drop(c);

    // A client that disconnects mid-request, and one that stalls.
    let mut c = UnixStream::connect(&d.path).await.unwrap();
    c.write_all(br#"{"op":"sh"#).await.unwrap();
    drop(c);
    let mut stalled = UnixStream::connect(&d.path).await.unwrap();
    stalled.write_all(br#"{"op":"#).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rest = BufReader::new(stalled);
    let mut line = String::new();
    let n = rest.read_line(&mut line).await.unwrap_or(0);
    assert_eq!(n, 0, "a stalled client is dropped after the read timeout");

    // Still serving.
    assert_eq!(show(&d.path).await.targets.len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn live_socket_is_not_stolen_and_stale_one_is_replaced() {
    let d = Daemon::start(AdminLimits::default()).await;
    let e = server::listen(d.admin.clone(), &d.path, AdminLimits::default())
        .await
        .unwrap_err();
    assert!(matches!(e, SocketError::InUse(_)), "{e}");
    // A regular file is never replaced.
    let other = d.path.with_file_name("not-a-socket");
    std::fs::write(&other, "x").unwrap();
    let e = server::listen(d.admin.clone(), &other, AdminLimits::default())
        .await
        .unwrap_err();
    assert!(matches!(e, SocketError::NotASocket(_)), "{e}");
    // A stale socket (nobody listening) is replaced.
    let stale = d.path.with_file_name("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let s = server::listen(d.admin.clone(), &stale, AdminLimits::default())
        .await
        .unwrap();
    let r = request(&stale, json!({"op": "show"})).await;
    assert!(r.ok);
    s.shutdown().await;
    assert!(!stale.exists(), "socket removed on shutdown");
    d.stop().await;
}
