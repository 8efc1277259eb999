//! `iscsi demo`: the whole stack on this machine in one command, no root.
//!
//! 1. A target with a 256 MiB memory LUN and CHAP on a free loopback port,
//!    in this process (`iscsi_target::server::Server`).
//! 2. Our initiator logs in to it with CHAP and two connections (MC/S).
//! 3. LUN 0 is exported over NBD on 127.0.0.1:10809 (another free port if
//!    that one is taken).
//! 4. 16 MiB are written through the export with the `nbd` crate's client
//!    (an NBD client that is not ours, over real TCP), flushed, read back and
//!    compared.
//! 5. It prints how to attach an NBD client and serves until Ctrl-C or
//!    SIGTERM, then ends NBD clients, flushes, logs out and stops the target.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use initiator::session::{ChapConfig, Session, SessionConfig};
use initiator::{Error, NbdExport, NbdListen, NbdServer, Portal, ScsiDevice};
use iscsi_target::config::{
    AuthConfig, ChapCredentials, LunConfig, PortalGroup, ServerConfig, SessionLimits, TargetConfig,
};
use iscsi_target::server::Server;

use crate::initiator_cmd::{exit_code, one_line};

const TARGET: &str = "iqn.2024-01.rs.iscsi:demo";
const INITIATOR: &str = "iqn.2024-01.rs.iscsi:demo-initiator";
const CHAP_USER: &str = "demo";
const LUN: &str = "mem:256M";
const CHECK_BYTES: usize = 16 << 20;

/// `iscsi demo` takes no arguments; the flags are for scripts and tests.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the NBD export listens (loopback only) [default: 127.0.0.1:10809,
    /// or a free port if that one is taken].
    #[arg(long, value_name = "HOST:PORT")]
    pub nbd: Option<SocketAddr>,
    /// Log filter for stderr (error, warn, info, debug, trace).
    #[arg(long, default_value = "warn")]
    pub log: String,
}

pub fn run(args: DemoArgs) -> ExitCode {
    crate::target_cmd::init_logging(&args.log);
    let rt = match crate::initiator_cmd::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let res = rt.block_on(demo(args));
    rt.shutdown_timeout(Duration::from_millis(200));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iscsi demo: {}", one_line(&e.to_string()));
            exit_code(&e)
        }
    }
}

/// A CHAP secret for this run (std's randomly keyed hasher; no RNG crate).
fn fresh_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn target_config(secret: &str) -> Result<ServerConfig, Error> {
    let usage = |e: String| Error::Usage(e);
    let target = TargetConfig {
        name: TARGET.into(),
        alias: Some("iscsi demo".into()),
        portal_groups: vec![PortalGroup {
            tpgt: 1,
            portals: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        }],
        luns: vec![LunConfig::parse_spec(0, LUN).map_err(|e| usage(e.to_string()))?],
        auth: AuthConfig {
            incoming: vec![ChapCredentials::parse(&format!("{CHAP_USER}:{secret}"))
                .map_err(|e| usage(e.to_string()))?],
            outgoing: None,
        },
        allow: Vec::new(),
        initiators: Default::default(),
        limits: SessionLimits::default(),
    };
    Ok(ServerConfig {
        targets: vec![target],
        discovery_auth: AuthConfig::default(),
        limits: Default::default(),
    })
}

/// 127.0.0.1:10809 when free, else any free loopback port.
async fn bind_nbd(asked: Option<SocketAddr>) -> Result<NbdServer, Error> {
    if let Some(a) = asked {
        return NbdServer::bind(&NbdListen::Tcp(a), false).await;
    }
    let default = SocketAddr::from(([127, 0, 0, 1], initiator::nbd::DEFAULT_PORT));
    match NbdServer::bind(&NbdListen::Tcp(default), false).await {
        Ok(s) => Ok(s),
        Err(_) => {
            NbdServer::bind(
                &NbdListen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
                false,
            )
            .await
        }
    }
}

async fn demo(a: DemoArgs) -> Result<(), Error> {
    let t0 = Instant::now();
    let secret = fresh_secret();
    let server = Server::start(target_config(&secret)?)
        .await
        .map_err(|e| Error::Unreachable(format!("cannot start the target: {e}")))?;
    let portal = server
        .local_addrs()
        .first()
        .copied()
        .ok_or_else(|| Error::Unreachable("the target bound no portal".into()))?;
    println!("target     {TARGET} on {portal}: LUN 0 = {LUN} (memory), CHAP user {CHAP_USER:?}");

    let mut cfg = SessionConfig::new(Portal::parse(&portal.to_string())?, TARGET, INITIATOR);
    cfg.chap = Some(ChapConfig {
        user: CHAP_USER.into(),
        secret: secret.as_bytes().to_vec(),
        ..ChapConfig::default()
    });
    cfg.connections = 2;
    let session = Session::connect(cfg).await?;
    println!(
        "initiator  {INITIATOR} logged in with CHAP: {} connections (MC/S), TSIH {}",
        session.connection_count(),
        session.tsih()
    );

    let result = serve(&session, a.nbd, t0).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), session.logout()).await;
    server.shutdown_with_grace(Duration::from_secs(1)).await;
    if result.is_ok() {
        println!("stopped: NBD clients ended, cache flushed, logged out, target stopped");
    }
    result
}

/// Export LUN 0, check it through NBD, print how to connect, wait for a signal.
async fn serve(session: &Session, nbd: Option<SocketAddr>, t0: Instant) -> Result<(), Error> {
    let dev = ScsiDevice::open(session, 0).await?;
    let nbd = bind_nbd(nbd).await?;
    nbd.add_export(NbdExport {
        name: "lun0".into(),
        description: format!("{TARGET} LUN 0 (iscsi demo)"),
        device: dev.clone(),
        read_only: false,
    })?;
    let uri = nbd.uri("lun0");
    println!(
        "NBD        lun0 ({} MiB, {}-byte blocks) exported on {uri}",
        dev.capacity().bytes() >> 20,
        dev.block_size()
    );
    let NbdListen::Tcp(addr) = nbd.listen() else {
        return Err(Error::Usage("the demo's NBD export listens on TCP".into()));
    };
    let check = tokio::task::spawn_blocking(move || check_through_nbd(addr))
        .await
        .map_err(|e| Error::Io {
            what: "NBD check task",
            source: e.into(),
        })?;
    match check {
        Ok(msg) => println!("check      {msg}"),
        Err(e) => {
            nbd.shutdown().await;
            return Err(Error::Io {
                what: "NBD check failed",
                source: e,
            });
        }
    }
    let (host, port) = (addr.ip(), addr.port());
    println!(
        "\nReady in {:.1} s. Connect an NBD client while this runs:\n  \
         nbdinfo {uri}\n  \
         qemu-img info {uri}\n  \
         mkdir -p /tmp/nbd && nbdfuse /tmp/nbd/lun0 {uri} &    # the disk as a file, then losetup/mkfs/mount\n  \
         sudo modprobe nbd && sudo nbd-client {host} {port} /dev/nbd0 -N lun0\n\
         Ctrl-C stops it.",
        t0.elapsed().as_secs_f64()
    );
    crate::target_cmd::wait_for_signal().await;
    eprintln!("iscsi demo: stopping");
    nbd.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(30), dev.flush()).await;
    Ok(())
}

/// Write, flush, read back and compare through the export with the `nbd`
/// crate's client (NBD spec: fixed newstyle, NBD_OPT_EXPORT_NAME, simple
/// replies).
fn check_through_nbd(addr: SocketAddr) -> std::io::Result<String> {
    let timeout = Duration::from_secs(60);
    let tcp = TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    tcp.set_nodelay(true)?;
    let mut tcp = std::io::BufReader::new(tcp);
    let export = nbd::client::handshake(&mut NbdStream(&mut tcp), b"lun0")?;
    let len = CHECK_BYTES.min(export.size as usize);
    // A xorshift stream: every 8-byte word differs, so a misplaced block shows.
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    let t = Instant::now();
    let mut client = nbd::client::NbdClient::new(NbdStream(&mut tcp), &export);
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        client.seek(SeekFrom::Start((i << 20) as u64))?;
        client.write_all(chunk)?;
    }
    client.flush()?;
    let wrote = t.elapsed();
    let t = Instant::now();
    let mut back = vec![0u8; len];
    client.seek(SeekFrom::Start(0))?;
    for chunk in back.chunks_mut(1 << 20) {
        client.read_exact(chunk)?;
    }
    let read = t.elapsed();
    if back != data {
        let at = back
            .iter()
            .zip(&data)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(std::io::Error::other(format!(
            "read back differs from what was written, first at byte {at}"
        )));
    }
    let mib = (len >> 20) as f64;
    Ok(format!(
        "wrote {mib} MiB through NBD with the `nbd` crate's client ({:.0} MiB/s), flushed, \
         read back ({:.0} MiB/s): identical",
        mib / wrote.as_secs_f64().max(1e-6),
        mib / read.as_secs_f64().max(1e-6)
    ))
}

/// The `nbd` client wants `Read + Write`: reads through the buffer, writes
/// straight to the socket (the client writes a request in pieces and then
/// flushes).
struct NbdStream<'a>(&'a mut std::io::BufReader<TcpStream>);

impl Read for NbdStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for NbdStream<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.get_mut().flush()
    }
}
