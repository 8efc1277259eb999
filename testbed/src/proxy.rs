//! A fault-injecting TCP proxy for connection-loss and recovery tests.
//!
//! [`Proxy::start`] listens (normally on `127.0.0.1:0`) and forwards every
//! accepted connection to one upstream address. Faults are set at run time,
//! per direction where that makes sense, and apply to live connections:
//!
//! | fault | effect |
//! |---|---|
//! | [`Proxy::set_delay`] | one-way latency: every chunk is delivered `d` after it was read (throughput is not capped) |
//! | [`Proxy::set_rate`] | bandwidth cap in that direction, in bytes per second, shared by every connection |
//! | [`Proxy::cut_all`] | close every open connection now (new ones are still accepted) |
//! | [`Proxy::cut_after`] | one-shot: after `n` more bytes in that direction (counted across connections, from now), forward exactly those bytes and close the connection that carried the last one |
//! | [`Proxy::set_blackhole`] | stall: stop forwarding in that direction without closing; data stays queued (TCP back-pressure), delivery resumes intact when cleared — a network partition that heals |
//! | [`Proxy::corrupt_at`] | one-shot: XOR the byte at offset `n` (counted from now, across connections) with a mask |
//! | [`Proxy::set_refuse`] | accept and immediately close new connections (the peer sees a connect followed by EOF) |
//! | [`Proxy::set_max_active`] | the same for new connections beyond `n` open ones: a path that carries fewer connections than the session wants (MC/S with one network down) |
//!
//! [`Proxy::stats`] counts connections and forwarded bytes. Dropping the
//! proxy closes the listener and every connection.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::lock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const OFF: u64 = u64::MAX;
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction (bounds memory under delay/stall).
const QUEUE: usize = 64;

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → upstream server.
    ToServer,
    /// Upstream server → client.
    ToClient,
}

impl Direction {
    fn idx(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// Counters (monotonic except `active`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and forwarded upstream.
    pub accepted: u64,
    /// Connections closed at once because of [`Proxy::set_refuse`] or a
    /// failed upstream connect.
    pub refused: u64,
    /// Connections currently open.
    pub active: u64,
    /// Connections closed by a fault (`cut_all`, `cut_after`).
    pub cut: u64,
    /// Bytes delivered client → server.
    pub bytes_to_server: u64,
    /// Bytes delivered server → client.
    pub bytes_to_client: u64,
}

#[derive(Default)]
struct DirFaults {
    delay_us: AtomicU64,
    /// Bytes per second, 0 = unlimited.
    rate: AtomicU64,
    /// When the shared link is next free (for the bandwidth cap).
    link_free_at: Mutex<Option<Instant>>,
    blackhole: AtomicBool,
    /// Remaining budget before a cut, or OFF.
    cut_after: AtomicU64,
    /// Remaining offset to the byte to corrupt, or OFF.
    corrupt_at: AtomicU64,
    corrupt_mask: AtomicU8,
    bytes: AtomicU64,
}

impl DirFaults {
    fn new() -> Self {
        let d = DirFaults::default();
        d.cut_after.store(OFF, Ordering::SeqCst);
        d.corrupt_at.store(OFF, Ordering::SeqCst);
        d
    }

    /// Apply the one-shot faults to a chunk just read; returns whether the
    /// connection must be cut after delivering the (possibly truncated) chunk.
    fn on_read(&self, data: &mut Vec<u8>) -> bool {
        let n = data.len() as u64;
        // Corruption first, on the bytes as read.
        let mut hit = None;
        let _ = self
            .corrupt_at
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |off| {
                if off == OFF {
                    hit = None;
                    None
                } else if off < n {
                    hit = Some(off as usize);
                    Some(OFF)
                } else {
                    hit = None;
                    Some(off - n)
                }
            });
        if let Some(i) = hit {
            data[i] ^= self.corrupt_mask.load(Ordering::SeqCst);
        }
        let mut cut = None;
        let _ = self
            .cut_after
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                if left == OFF {
                    cut = None;
                    None
                } else if left <= n {
                    cut = Some(left as usize);
                    Some(OFF)
                } else {
                    cut = None;
                    Some(left - n)
                }
            });
        match cut {
            Some(keep) => {
                data.truncate(keep);
                true
            }
            None => false,
        }
    }
}

impl DirFaults {
    /// Under a bandwidth cap, book `len` bytes on the shared link and return
    /// when they may be sent (serialised across connections).
    fn reserve_link(&self, len: usize) -> Option<Instant> {
        let rate = self.rate.load(Ordering::SeqCst);
        if rate == 0 {
            return None;
        }
        let now = Instant::now();
        let mut free = lock(&self.link_free_at);
        let start = free.filter(|t| *t > now).unwrap_or(now);
        let busy = Duration::from_secs_f64(len as f64 / rate as f64);
        *free = Some(start + busy);
        Some(start + busy)
    }
}

struct Shared {
    upstream: SocketAddr,
    dirs: [DirFaults; 2],
    refuse: AtomicBool,
    /// New connections are refused while this many are open (OFF: no limit).
    max_active: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    active: AtomicU64,
    cut: AtomicU64,
    /// Parent of every live connection's token; replaced on `cut_all`.
    generation: Mutex<CancellationToken>,
    shutdown: CancellationToken,
}

/// A running proxy; see the module docs. Drop it to stop everything.
pub struct Proxy {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listen on `listen` (use port 0) and forward to `upstream`. Must run
    /// inside a tokio runtime; the proxy's tasks live on it.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            upstream,
            dirs: [DirFaults::new(), DirFaults::new()],
            refuse: AtomicBool::new(false),
            max_active: AtomicU64::new(OFF),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            active: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            generation: Mutex::new(shutdown.child_token()),
            shutdown,
        });
        tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy { local_addr, shared })
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    fn dir(&self, d: Direction) -> &DirFaults {
        &self.shared.dirs[d.idx()]
    }

    /// One-way latency for `d` (zero to disable).
    pub fn set_delay(&self, d: Direction, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX - 1);
        self.dir(d).delay_us.store(us, Ordering::SeqCst);
    }

    /// Cap the bandwidth of direction `d` at `bytes_per_sec` across every
    /// connection (0 removes the cap).
    pub fn set_rate(&self, d: Direction, bytes_per_sec: u64) {
        self.dir(d).rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Close every open connection now.
    pub fn cut_all(&self) {
        let mut g = lock(&self.shared.generation);
        g.cancel();
        *g = self.shared.shutdown.child_token();
    }

    /// One-shot: cut the connection that carries the `bytes`-th byte in
    /// direction `d` from now on (that byte is still delivered). `0` cuts
    /// the next connection that sends anything in that direction, before
    /// delivering any of it.
    pub fn cut_after(&self, d: Direction, bytes: u64) {
        self.dir(d)
            .cut_after
            .store(bytes.min(OFF - 1), Ordering::SeqCst);
    }

    /// Stall (`true`) or resume (`false`) forwarding in direction `d`.
    pub fn set_blackhole(&self, d: Direction, on: bool) {
        self.dir(d).blackhole.store(on, Ordering::SeqCst);
    }

    /// One-shot: XOR the byte at `offset` (0-based, counted in direction `d`
    /// from now on) with `mask` (non-zero).
    pub fn corrupt_at(&self, d: Direction, offset: u64, mask: u8) {
        let f = self.dir(d);
        f.corrupt_mask
            .store(if mask == 0 { 0xff } else { mask }, Ordering::SeqCst);
        f.corrupt_at.store(offset.min(OFF - 1), Ordering::SeqCst);
    }

    /// Refuse (accept and close at once) new connections while `on`.
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Refuse (accept and close at once) new connections while `n` or more
    /// are open; `None` lifts the limit. Open connections are not touched.
    pub fn set_max_active(&self, n: Option<u64>) {
        let v = n.map_or(OFF, |n| n.min(OFF - 1));
        self.shared.max_active.store(v, Ordering::SeqCst);
    }

    /// Remove every fault (pending one-shots included); open connections
    /// stay open.
    pub fn clear_faults(&self) {
        for d in [Direction::ToServer, Direction::ToClient] {
            let f = self.dir(d);
            f.delay_us.store(0, Ordering::SeqCst);
            f.rate.store(0, Ordering::SeqCst);
            f.blackhole.store(false, Ordering::SeqCst);
            f.cut_after.store(OFF, Ordering::SeqCst);
            f.corrupt_at.store(OFF, Ordering::SeqCst);
        }
        self.shared.refuse.store(false, Ordering::SeqCst);
        self.shared.max_active.store(OFF, Ordering::SeqCst);
    }

    /// Current counters.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            refused: s.refused.load(Ordering::SeqCst),
            active: s.active.load(Ordering::SeqCst),
            cut: s.cut.load(Ordering::SeqCst),
            bytes_to_server: s.dirs[0].bytes.load(Ordering::SeqCst),
            bytes_to_client: s.dirs[1].bytes.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((client, _)) = accepted else {
            // EMFILE and friends: back off a little rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.refuse.load(Ordering::SeqCst)
            || shared.active.load(Ordering::SeqCst) >= shared.max_active.load(Ordering::SeqCst)
        {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let token = lock(&shared.generation).child_token();
        tokio::spawn(connection(client, shared.clone(), token));
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>, token: CancellationToken) {
    let upstream = tokio::select! {
        _ = token.cancelled() => return,
        r = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(shared.upstream)) => r,
    };
    let Ok(Ok(server)) = upstream else {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    shared.active.fetch_add(1, Ordering::SeqCst);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let pumps = async {
        tokio::join!(
            pump(cr, sw, &shared.dirs[0], &token),
            pump(sr, cw, &shared.dirs[1], &token)
        )
    };
    tokio::select! {
        _ = token.cancelled() => {
            // Cut by a fault (not by proxy shutdown).
            if !shared.shutdown.is_cancelled() {
                shared.cut.fetch_add(1, Ordering::SeqCst);
            }
        }
        _ = pumps => {}
    }
    // Both streams are dropped here: the peers see the connection close.
    shared.active.fetch_sub(1, Ordering::SeqCst);
}

struct Chunk {
    data: Vec<u8>,
    deliver_at: Instant,
    cut_after: bool,
}

/// Forward one direction: a reader stamps chunks, a writer delivers them
/// after the configured delay, honouring stalls, then half-closes.
async fn pump(
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    f: &DirFaults,
    token: &CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<Chunk>(QUEUE);
    let reader = async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            let cut_after = f.on_read(&mut buf);
            let delay = Duration::from_micros(f.delay_us.load(Ordering::SeqCst));
            let chunk = Chunk {
                data: buf,
                deliver_at: Instant::now() + delay,
                cut_after,
            };
            if tx.send(chunk).await.is_err() || cut_after {
                break;
            }
        }
        // Dropping tx lets the writer finish and half-close.
    };
    let writer = async move {
        while let Some(chunk) = rx.recv().await {
            tokio::time::sleep_until(chunk.deliver_at).await;
            while f.blackhole.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if let Some(at) = f.reserve_link(chunk.data.len()) {
                tokio::time::sleep_until(at).await;
            }
            if !chunk.data.is_empty() {
                if wr.write_all(&chunk.data).await.is_err() {
                    break;
                }
                f.bytes.fetch_add(chunk.data.len() as u64, Ordering::SeqCst);
            }
            if chunk.cut_after {
                let _ = wr.flush().await;
                token.cancel();
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_accounting() {
        let f = DirFaults::new();
        f.cut_after.store(10, Ordering::SeqCst);
        f.corrupt_at.store(5, Ordering::SeqCst);
        f.corrupt_mask.store(0xff, Ordering::SeqCst);
        let mut a = vec![0u8; 4];
        assert!(!f.on_read(&mut a));
        assert_eq!(a, [0; 4]);
        let mut b = vec![0u8; 4];
        assert!(!f.on_read(&mut b));
        assert_eq!(
            b,
            [0, 0xff, 0, 0],
            "offset 5 = second byte of the second chunk"
        );
        let mut c = vec![1u8; 4];
        assert!(f.on_read(&mut c), "budget of 10 ends in this chunk");
        assert_eq!(c, [1, 1], "only the bytes up to the budget are kept");
        let mut d = vec![1u8; 4];
        assert!(!f.on_read(&mut d), "one-shot: disarmed");
        assert_eq!(d.len(), 4);
    }
}
