//! Admission caps and the authentication backoff (issue 10 item 5,
//! `iscsi_target::limits`), through raw logins on loopback: each cap is
//! answered with its Login Response status before anything is committed,
//! and a source that keeps failing CHAP waits while another source logs in
//! at once.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{isid, target_config, Conn};
use iscsi_target::config::{AuthConfig, ChapCredentials, ServerConfig, SessionLimits};
use iscsi_target::limits::ServerLimits;
use iscsi_target::server::Server;
use tokio::net::{TcpSocket, TcpStream};

const T: &str = "iqn.2024-01.rs.iscsi:test.limits";

async fn server(limits: ServerLimits, auth: AuthConfig) -> Server {
    let mut t = target_config(T, &["mem:1M"], SessionLimits::default());
    t.auth = auth;
    Server::start(ServerConfig {
        targets: vec![t],
        discovery_auth: AuthConfig::default(),
        limits,
    })
    .await
    .expect("server start")
}

async fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(src.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    sock.connect(addr).await.expect("connect")
}

fn status_of(r: Result<Conn, String>) -> String {
    match r {
        Ok(_) => "logged in".into(),
        Err(e) => e,
    }
}

#[tokio::test]
async fn session_and_per_initiator_caps_answer_out_of_resources() {
    let limits = ServerLimits {
        max_sessions_per_target: 2,
        max_connections_per_initiator: 3,
        ..ServerLimits::default()
    };
    let s = server(limits, AuthConfig::default()).await;
    let addr = s.local_addrs()[0];
    let mut a = Conn::login(addr, Some(T), isid(1), 0, 0).await.unwrap();
    let _b = Conn::login(addr, Some(T), isid(2), 0, 0).await.unwrap();
    let e = status_of(Conn::login_with(addr, Some(T), isid(3), 0, 0, |_| {}).await);
    assert!(e.contains("status 0302"), "third session: {e}");
    // A second connection of an existing session is not a new session,
    // but counts for the initiator: 3 connections allowed, the 4th is not.
    let tsih = a.outcome.tsih;
    let _a2 = Conn::login_with(addr, Some(T), isid(1), tsih, 1, |_| {})
        .await
        .unwrap();
    let e = status_of(Conn::login_with(addr, Some(T), isid(1), tsih, 2, |_| {}).await);
    assert!(e.contains("status 0302"), "fourth connection: {e}");
    // Discovery sessions do not count against a target's sessions.
    let _ = status_of(Conn::login(addr, None, isid(9), 0, 0).await);
    // A session that ends frees its place.
    a.logout().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Conn::login_with(addr, Some(T), isid(4), 0, 0, |_| {}).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline && e.contains("0302") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("login after a logout: {e}"),
        }
    }
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn logins_in_progress_are_capped() {
    let limits = ServerLimits {
        max_logins_in_progress: 1,
        ..ServerLimits::default()
    };
    let s = server(limits, AuthConfig::default()).await;
    let addr = s.local_addrs()[0];
    // A connection that never sends its Login Request holds the one slot.
    let idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = status_of(Conn::login_with(addr, Some(T), isid(5), 0, 0, |_| {}).await);
    assert!(e.contains("status 0302"), "second login in progress: {e}");
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = Conn::login_with(addr, Some(T), isid(6), 0, 0, |_| {}).await {
        assert!(Instant::now() < deadline, "slot never freed: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}

/// Two wrong CHAP secrets from 127.0.0.1 put that address in backoff: its
/// next login, even with the right secret, is answered 0x0301 "service
/// unavailable" at once; 127.0.0.2 logs in with the right secret
/// meanwhile; once the backoff has passed 127.0.0.1 logs in again.
#[tokio::test]
async fn failed_chap_backs_off_the_source_only() {
    let limits = ServerLimits {
        auth_failures_before_backoff: 2,
        auth_backoff_base: Duration::from_millis(800),
        ..ServerLimits::default()
    };
    let auth = AuthConfig {
        incoming: vec![ChapCredentials {
            user: "alice".into(),
            secret: b"correct-horse-1".to_vec(),
        }],
        outgoing: None,
    };
    let s = server(limits, auth).await;
    let addr = s.local_addrs()[0];
    let chap = |secret: &'static [u8]| {
        move |c: &mut proto::login::InitiatorLoginConfig| {
            let creds = chap::Credentials::new("alice", secret);
            c.authenticator = Some(Box::new(chap::InitiatorChap::new(creds, None).unwrap()));
        }
    };
    let login = |src: &'static str, n: u8, secret: &'static [u8]| async move {
        let stream = connect_from(src, addr).await;
        status_of(Conn::login_on(stream, Some(T), isid(n), 0, 0, chap(secret)).await)
    };
    for n in 10..12 {
        let e = login("127.0.0.1", n, b"wrong-secret-xx").await;
        assert!(e.contains("status 0201"), "wrong secret: {e}");
    }
    let t0 = Instant::now();
    let e = login("127.0.0.1", 12, b"correct-horse-1").await;
    assert!(e.contains("status 0301"), "source in backoff: {e}");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "refusal was not immediate"
    );
    let t0 = Instant::now();
    assert_eq!(
        login("127.0.0.2", 13, b"correct-horse-1").await,
        "logged in"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "another source was slowed"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        login("127.0.0.1", 14, b"correct-horse-1").await,
        "logged in"
    );
    s.shutdown_with_grace(Duration::from_millis(200)).await;
}
