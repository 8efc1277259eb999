//! The fault-injecting proxy against a real echo server, one fault at a time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testbed::{Direction, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

/// An echo server on 127.0.0.1:0 (runs until the test's runtime ends).
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn setup() -> (Proxy, TcpStream) {
    let up = echo_server().await;
    let p = Proxy::start("127.0.0.1:0".parse().unwrap(), up)
        .await
        .unwrap();
    let c = TcpStream::connect(p.local_addr()).await.unwrap();
    (p, c)
}

async fn roundtrip(c: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    c.write_all(data).await.unwrap();
    let mut buf = vec![0u8; data.len()];
    timeout(T, c.read_exact(&mut buf))
        .await
        .expect("echo timed out")
        .unwrap();
    buf
}

/// Reads until EOF or error; returns the bytes read and whether it ended.
async fn read_to_close(c: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(T, c.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn forwards_and_counts() {
    let (p, mut c) = setup().await;
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(roundtrip(&mut c, &data).await, data);
    let s = p.stats();
    assert_eq!(s.accepted, 1);
    assert_eq!(s.active, 1);
    assert_eq!(s.bytes_to_server, 100_000);
    assert_eq!(s.bytes_to_client, 100_000);
    // Half-close propagates: the echo server sees EOF and closes too.
    c.shutdown().await.unwrap();
    let (rest, closed) = read_to_close(&mut c).await;
    assert!(rest.is_empty() && closed);
}

#[tokio::test]
async fn delay_adds_latency_per_direction() {
    let (p, mut c) = setup().await;
    roundtrip(&mut c, b"warm").await;
    p.set_delay(Direction::ToServer, Duration::from_millis(150));
    p.set_delay(Direction::ToClient, Duration::from_millis(100));
    let t0 = Instant::now();
    assert_eq!(roundtrip(&mut c, b"ping").await, b"ping");
    let rtt = t0.elapsed();
    assert!(rtt >= Duration::from_millis(250), "rtt {rtt:?}");
    assert!(rtt < Duration::from_secs(3), "rtt {rtt:?}");
    // Latency, not a throughput cap: 20 pipelined messages still take about one RTT.
    let t0 = Instant::now();
    let msg = vec![7u8; 1000];
    for _ in 0..20 {
        c.write_all(&msg).await.unwrap();
    }
    let mut buf = vec![0u8; 20_000];
    timeout(T, c.read_exact(&mut buf)).await.unwrap().unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    p.clear_faults();
    let t0 = Instant::now();
    roundtrip(&mut c, b"fast").await;
    assert!(t0.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn cut_all_closes_connections_but_accepts_new_ones() {
    let (p, mut c) = setup().await;
    roundtrip(&mut c, b"hello").await;
    p.cut_all();
    let (_, closed) = read_to_close(&mut c).await;
    assert!(closed, "connection must be closed by cut_all");
    // Wait for the bookkeeping of the cut connection.
    for _ in 0..100 {
        if p.stats().active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.stats().active, 0);
    assert_eq!(p.stats().cut, 1);
    let mut c2 = TcpStream::connect(p.local_addr()).await.unwrap();
    assert_eq!(roundtrip(&mut c2, b"again").await, b"again");
}

#[tokio::test]
async fn cut_after_n_bytes_toward_client() {
    let (p, mut c) = setup().await;
    roundtrip(&mut c, b"xx").await;
    p.cut_after(Direction::ToClient, 1000);
    let data = vec![0x5au8; 5000];
    c.write_all(&data).await.unwrap();
    let (got, closed) = read_to_close(&mut c).await;
    assert!(closed);
    assert_eq!(
        got.len(),
        1000,
        "exactly the budget is delivered before the cut"
    );
    assert!(got.iter().all(|b| *b == 0x5a));
    // One-shot: a new connection works fully.
    let mut c2 = TcpStream::connect(p.local_addr()).await.unwrap();
    assert_eq!(roundtrip(&mut c2, &data).await, data);
}

#[tokio::test]
async fn cut_after_n_bytes_toward_server() {
    let (p, mut c) = setup().await;
    p.cut_after(Direction::ToServer, 10);
    c.write_all(b"0123456789abcdef").await.unwrap();
    let (got, closed) = read_to_close(&mut c).await;
    assert!(closed);
    // The server saw (and echoed, if it was fast enough) at most the first 10 bytes.
    assert!(
        got.len() <= 10 && b"0123456789".starts_with(&got),
        "{got:?}"
    );
    assert_eq!(p.stats().bytes_to_server, 10);
}

#[tokio::test]
async fn blackhole_stalls_without_closing_then_heals() {
    let (p, mut c) = setup().await;
    roundtrip(&mut c, b"ok").await;
    p.set_blackhole(Direction::ToClient, true);
    c.write_all(b"held back").await.unwrap();
    let mut buf = [0u8; 9];
    assert!(
        timeout(Duration::from_millis(300), c.read_exact(&mut buf))
            .await
            .is_err(),
        "nothing may arrive while blackholed"
    );
    assert_eq!(p.stats().active, 1, "the connection stays open");
    p.set_blackhole(Direction::ToClient, false);
    timeout(T, c.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(
        &buf, b"held back",
        "queued data is delivered intact after healing"
    );
}

#[tokio::test]
async fn corrupts_exactly_one_byte() {
    let (p, mut c) = setup().await;
    p.corrupt_at(Direction::ToServer, 3, 0x01);
    let got = roundtrip(&mut c, b"abcdefgh").await;
    assert_eq!(&got, b"abceefgh", "'d' ^ 0x01 == 'e' at offset 3");
    // One-shot.
    assert_eq!(roundtrip(&mut c, b"abcdefgh").await, b"abcdefgh");
    // Offsets count from when the fault is set, across chunks.
    p.corrupt_at(Direction::ToClient, 10, 0xff);
    assert_eq!(roundtrip(&mut c, b"01234").await, b"01234");
    let got = roundtrip(&mut c, b"56789abcd").await;
    assert_eq!(got[5], b'a' ^ 0xff);
    assert_eq!(&got[..5], b"56789");
}

#[tokio::test]
async fn refuses_new_connections_on_demand() {
    let (p, mut c) = setup().await;
    // Make sure `c` has been accepted before refusing.
    roundtrip(&mut c, b"first").await;
    p.set_refuse(true);
    let mut c2 = TcpStream::connect(p.local_addr()).await.unwrap();
    let (_, closed) = read_to_close(&mut c2).await;
    assert!(closed, "refused connection is closed at once");
    assert_eq!(p.stats().refused, 1);
    // Existing connections are unaffected.
    assert_eq!(roundtrip(&mut c, b"still").await, b"still");
    p.set_refuse(false);
    let mut c3 = TcpStream::connect(p.local_addr()).await.unwrap();
    assert_eq!(roundtrip(&mut c3, b"back").await, b"back");
}

#[tokio::test]
async fn max_active_refuses_only_connections_beyond_the_limit() {
    let (p, mut c) = setup().await;
    roundtrip(&mut c, b"first").await;
    p.set_max_active(Some(1));
    let mut c2 = TcpStream::connect(p.local_addr()).await.unwrap();
    let (_, closed) = read_to_close(&mut c2).await;
    assert!(closed, "a second connection is refused");
    assert_eq!(p.stats().refused, 1);
    assert_eq!(roundtrip(&mut c, b"still").await, b"still");
    p.set_max_active(None);
    let mut c3 = TcpStream::connect(p.local_addr()).await.unwrap();
    assert_eq!(roundtrip(&mut c3, b"back").await, b"back");
    assert_eq!(p.stats().active, 2);
}

#[tokio::test]
async fn upstream_down_closes_client() {
    // A port with nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = Proxy::start("127.0.0.1:0".parse().unwrap(), dead)
        .await
        .unwrap();
    let mut c = TcpStream::connect(p.local_addr()).await.unwrap();
    let (_, closed) = read_to_close(&mut c).await;
    assert!(closed);
    assert_eq!(p.stats().refused, 1);
    assert_eq!(p.stats().accepted, 0);
}

#[tokio::test]
async fn drop_closes_everything() {
    let (p, mut c) = setup().await;
    roundtrip(&mut c, b"hi").await;
    let addr = p.local_addr();
    drop(p);
    let (_, closed) = read_to_close(&mut c).await;
    assert!(closed);
    // The listener is gone too (give the accept task a moment to exit).
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn rate_caps_bandwidth() {
    let (p, mut c) = setup().await;
    let data = vec![7u8; 512 * 1024];
    // Unlimited first: a loopback echo of 512 KiB is well under 0.2 s.
    let t = Instant::now();
    assert_eq!(roundtrip(&mut c, &data).await, data);
    let fast = t.elapsed();
    // 2 MiB/s toward the server: 512 KiB needs at least 0.25 s.
    p.set_rate(Direction::ToServer, 2 << 20);
    let t = Instant::now();
    assert_eq!(roundtrip(&mut c, &data).await, data);
    let slow = t.elapsed();
    assert!(
        slow >= Duration::from_millis(240),
        "capped echo took {slow:?}"
    );
    assert!(slow > fast, "{slow:?} vs {fast:?}");
    p.clear_faults();
    let t = Instant::now();
    assert_eq!(roundtrip(&mut c, &data).await, data);
    assert!(t.elapsed() < slow, "cap removed by clear_faults");
}
