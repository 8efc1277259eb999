//! The stack a fault scenario runs on: our target as a process (`iscsi
//! target serve`, a thin file LUN, CHAP) behind the fault-injecting
//! [`Proxy`], and an initiator [`Session`] with two connections through
//! that proxy. The target can be killed (SIGKILL) and restarted on the same
//! port; its file LUN keeps the data, as a disk would.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use initiator::session::{ChapConfig, Offer};
use initiator::{
    NbdExport, NbdListen, NbdServer, Portal, ScsiDevice, Session, SessionConfig, SessionEvent,
};
use tokio::runtime::Handle;

use crate::nbd_client::NbdIo;
use crate::process::{free_port, ServerProcess};
use crate::proxy::Proxy;
use crate::scenarios::workload::{BlockIo, Opener};
use crate::sync::lock;

pub const TARGET_IQN: &str = "iqn.2026-01.rs.iscsi-rs:scenario";
pub const INITIATOR_IQN: &str = "iqn.2026-01.rs.iscsi-rs:scenario-initiator";
const CHAP_USER: &str = "scenario";
const CHAP_SECRET: &str = "scenario-secret-1";

/// How to build the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The `iscsi` binary.
    pub bin: PathBuf,
    /// LUN size in bytes.
    pub lun_size: u64,
    /// Connections per session (MC/S).
    pub connections: u16,
    /// Offer CRC32C header and data digests.
    pub digests: bool,
    /// The initiator's NOP-Out interval and timeout.
    pub nop_interval: Duration,
    pub nop_timeout: Duration,
    /// How long the session keeps trying to recover before failing I/O.
    pub recovery_timeout: Duration,
}

impl StackOptions {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        StackOptions {
            bin: bin.into(),
            lun_size: 64 << 20,
            connections: 2,
            digests: false,
            nop_interval: Duration::from_secs(1),
            nop_timeout: Duration::from_secs(3),
            recovery_timeout: Duration::from_secs(60),
        }
    }
}

/// Session events with the time they were seen.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: Arc<Mutex<Vec<(Instant, SessionEvent)>>>,
}

impl EventLog {
    fn record(session: &Session) -> EventLog {
        let log = EventLog::default();
        let mut rx = session.events();
        let events = log.events.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => lock(&events).push((Instant::now(), e)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
        log
    }

    /// Every (Recovering → Recovered) interval, in order.
    pub fn recoveries(&self) -> Vec<Duration> {
        let ev = lock(&self.events);
        let mut out = Vec::new();
        let mut since = None;
        for (t, e) in ev.iter() {
            match e {
                SessionEvent::Recovering(_) | SessionEvent::LogoutRequested => {
                    since.get_or_insert(*t);
                }
                SessionEvent::Recovered { .. } => {
                    if let Some(s) = since.take() {
                        out.push(t.duration_since(s));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// How many times the session gave up (`Failed`).
    pub fn failures(&self) -> usize {
        let ev = lock(&self.events);
        ev.iter()
            .filter(|(_, e)| matches!(e, SessionEvent::Failed(_)))
            .count()
    }
}

/// Target process + proxy + session; see the module docs.
pub struct Stack {
    opts: StackOptions,
    dir: tempfile::TempDir,
    port: u16,
    target: Option<ServerProcess>,
    pub proxy: Proxy,
    pub session: Session,
    pub device: ScsiDevice,
    pub events: EventLog,
}

impl Stack {
    /// Start the target, the proxy and log in. Must run inside a
    /// multi-threaded tokio runtime.
    pub async fn start(opts: StackOptions) -> io::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let mut last = io::Error::other("no attempt");
        // A free port may be taken between the check and the bind: retry.
        for _ in 0..5 {
            let port = free_port()?;
            match spawn_target(&opts, &dir, port) {
                Ok(target) => return Self::connect(opts, dir, port, target).await,
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect(
        opts: StackOptions,
        dir: tempfile::TempDir,
        port: u16,
        target: ServerProcess,
    ) -> io::Result<Stack> {
        let upstream: SocketAddr = ([127, 0, 0, 1], port).into();
        let proxy = Proxy::start(([127, 0, 0, 1], 0).into(), upstream).await?;
        let portal = Portal::parse(&proxy.local_addr().to_string()).map_err(io::Error::other)?;
        let mut c = SessionConfig::new(portal, TARGET_IQN, INITIATOR_IQN);
        c.chap = Some(ChapConfig {
            user: CHAP_USER.into(),
            secret: CHAP_SECRET.as_bytes().to_vec(),
            ..ChapConfig::default()
        });
        c.connections = opts.connections;
        c.offer = Offer {
            header_digest: opts.digests,
            data_digest: opts.digests,
            ..Offer::default()
        };
        c.connect_timeout = Duration::from_secs(2);
        c.login_timeout = Duration::from_secs(5);
        c.nop_interval = opts.nop_interval;
        c.nop_timeout = opts.nop_timeout;
        c.command_timeout = Duration::from_secs(30);
        c.recovery_timeout = opts.recovery_timeout;
        let session = Session::connect(c).await.map_err(io::Error::other)?;
        let events = EventLog::record(&session);
        let device = ScsiDevice::open(&session, 0)
            .await
            .map_err(io::Error::other)?;
        Ok(Stack {
            opts,
            dir,
            port,
            target: Some(target),
            proxy,
            session,
            device,
            events,
        })
    }

    /// SIGKILL the target (no logout, no flush beyond what it acknowledged).
    pub fn kill_target(&mut self) {
        self.target = None;
    }

    /// Start the target again on the same port with the same LUN file.
    pub fn restart_target(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn_target(&self.opts, &self.dir, self.port) {
                Ok(t) => {
                    self.target = Some(t);
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// What the target process printed (warnings and errors), for failure
    /// messages.
    pub fn target_output(&self) -> Vec<String> {
        self.target.as_ref().map(|t| t.output()).unwrap_or_default()
    }

    /// Whether the target process is still running.
    pub fn target_alive(&mut self) -> bool {
        match self.target.as_mut() {
            Some(t) => matches!(t.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Export LUN 0 over NBD on a free loopback port (our `NbdServer`, in
    /// this process, on this stack's session) and return an opener of
    /// [`NbdIo`] connections to it (the `nbd` crate's client), each request
    /// bounded by `op_timeout`. Keep the server until the workload is done.
    pub async fn nbd_export(&self, op_timeout: Duration) -> io::Result<(NbdServer, Opener)> {
        let listen = NbdListen::Tcp(([127, 0, 0, 1], 0).into());
        let server = NbdServer::bind(&listen, false)
            .await
            .map_err(io::Error::other)?;
        server
            .add_export(NbdExport {
                name: "lun0".into(),
                description: format!("{TARGET_IQN} LUN 0 (fault scenario)"),
                device: self.device.clone(),
                read_only: false,
            })
            .map_err(io::Error::other)?;
        let NbdListen::Tcp(addr) = server.listen() else {
            return Err(io::Error::other("NBD server is not on TCP"));
        };
        let addr = addr.to_string();
        let open: Opener = Arc::new(move || {
            NbdIo::connect(&addr, "lun0", op_timeout).map(|c| Box::new(c) as Box<dyn BlockIo>)
        });
        Ok((server, open))
    }

    /// An opener of [`ScsiIo`] handles on LUN 0, for the workload.
    pub fn scsi_opener(&self, op_timeout: Duration) -> Opener {
        let dev = self.device.clone();
        let rt = Handle::current();
        Arc::new(move || {
            Ok(Box::new(ScsiIo {
                dev: dev.clone(),
                rt: rt.clone(),
                timeout: op_timeout,
            }) as Box<dyn BlockIo>)
        })
    }
}

fn spawn_target(
    opts: &StackOptions,
    dir: &tempfile::TempDir,
    port: u16,
) -> io::Result<ServerProcess> {
    let img = dir.path().join("lun0.img");
    let mut c = Command::new(&opts.bin);
    c.args(["target", "serve", "--portal"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--target", TARGET_IQN, "--lun"])
        .arg(format!(
            "file:{},size={},thin",
            img.display(),
            opts.lun_size
        ))
        .args(["--chap", &format!("{CHAP_USER}:{CHAP_SECRET}")])
        .arg("--admin-socket")
        .arg(dir.path().join(format!("admin-{port}.sock")))
        .args(["--log", "warn"]);
    ServerProcess::spawn(c, "listening on", Duration::from_secs(10))
}

/// The initiator's block-device API as a [`BlockIo`] (blocking calls on a
/// tokio runtime handle, each bounded by `timeout`).
pub struct ScsiIo {
    dev: ScsiDevice,
    rt: Handle,
    timeout: Duration,
}

impl ScsiIo {
    fn blocks(&self, offset: u64, len: u64) -> io::Result<(u64, u64)> {
        let bs = u64::from(self.dev.block_size());
        if offset.checked_rem(bs) != Some(0) || len.checked_rem(bs) != Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{offset}+{len} is not aligned to the {bs}-byte blocks"),
            ));
        }
        Ok((offset / bs, len / bs))
    }

    fn run<T>(&self, f: impl std::future::Future<Output = initiator::Result<T>>) -> io::Result<T> {
        self.rt
            .block_on(async { tokio::time::timeout(self.timeout, f).await })
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "operation timed out"))?
            .map_err(io::Error::other)
    }
}

impl BlockIo for ScsiIo {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let (lba, n) = self.blocks(offset, buf.len() as u64)?;
        let n = u32::try_from(n).map_err(io::Error::other)?;
        let data = self.run(self.dev.read(lba, n))?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let (lba, _) = self.blocks(offset, data.len() as u64)?;
        let bytes = initiator::bytes::Bytes::copy_from_slice(data);
        self.run(self.dev.write(lba, bytes, false))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.run(self.dev.flush())
    }

    fn trim(&mut self, offset: u64, len: u64) -> io::Result<bool> {
        if !self.dev.supports_unmap() {
            return Ok(false);
        }
        let (lba, n) = self.blocks(offset, len)?;
        let n = u32::try_from(n).map_err(io::Error::other)?;
        self.run(self.dev.unmap(&[(lba, n)]))?;
        Ok(true)
    }
}
