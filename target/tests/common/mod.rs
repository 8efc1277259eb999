//! A small raw iSCSI initiator for the target's integration tests, built
//! on `proto`: its login state machine, its PDU codec and, for whole
//! commands, the initiator's sans-IO full-feature core. Tests that probe
//! protocol corner cases build and send PDUs by hand with [`Conn::send`]
//! and [`Conn::recv`]. One command at a time per connection.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use iscsi_target::config::{
    AuthConfig, LunConfig, PortalGroup, ServerConfig, SessionLimits, TargetConfig,
};
use iscsi_target::server::Server;
use proto::codec::PduCodec;
use proto::login::{InitiatorLogin, InitiatorLoginConfig, InitiatorStep, LoginOutcome};
use proto::pdu::{DecodeLimits, DigestConfig, Isid, LogoutReason, LogoutRequest, Pdu};
use proto::serial::{CmdSn, StatSn};
use proto::session::initiator::{
    Command, ConnParams, Data, Event, InitiatorConfig, InitiatorSession,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

pub const INITIATOR: &str = "iqn.2024-01.rs.iscsi:test-initiator";

/// Start an in-process server with one target.
pub async fn start_server(target: &str, luns: &[&str], limits: SessionLimits) -> Server {
    start_targets(vec![target_config(target, luns, limits)]).await
}

/// One target on 127.0.0.1 (port chosen by the server), no auth, no ACL.
pub fn target_config(target: &str, luns: &[&str], limits: SessionLimits) -> TargetConfig {
    let luns = luns
        .iter()
        .enumerate()
        .map(|(i, s)| LunConfig::parse_spec(i as u64, s).expect("lun spec"))
        .collect();
    TargetConfig {
        name: target.into(),
        alias: None,
        portal_groups: vec![PortalGroup {
            tpgt: 1,
            portals: vec!["127.0.0.1:0".parse().unwrap()],
        }],
        luns,
        auth: AuthConfig::default(),
        allow: vec![],
        initiators: Default::default(),
        limits,
    }
}

/// Start an in-process server with these targets.
pub async fn start_targets(targets: Vec<TargetConfig>) -> Server {
    let cfg = ServerConfig {
        targets,
        discovery_auth: AuthConfig::default(),
        limits: Default::default(),
    };
    Server::start(cfg).await.expect("server start")
}

/// Result of one SCSI command.
#[derive(Debug, Clone)]
pub struct CmdResult {
    pub status: u8,
    pub sense: Option<Bytes>,
    pub data: Vec<u8>,
    pub overflow: bool,
    pub underflow: bool,
    pub residual: u32,
}

pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub outcome: LoginOutcome,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    pub itt: u32,
    pub digests: DigestConfig,
    pub max_cmd_sn: CmdSn,
}

pub fn isid(n: u8) -> Isid {
    Isid([0x80, 0x12, 0x34, 0x56, 0x00, n])
}

impl Conn {
    /// Log in to `target` (normal session) or discovery (`None`).
    /// For normal sessions, TEST UNIT READY is repeated until the
    /// power-on unit attention is consumed.
    pub async fn login(
        addr: SocketAddr,
        target: Option<&str>,
        isid: Isid,
        tsih: u16,
        cid: u16,
    ) -> Result<Conn, String> {
        let mut c = Self::login_with(addr, target, isid, tsih, cid, |_| {}).await?;
        if target.is_some() {
            c.clear_unit_attention().await?;
        }
        Ok(c)
    }

    /// TEST UNIT READY until GOOD (unit attentions are reported once).
    pub async fn clear_unit_attention(&mut self) -> Result<(), String> {
        for _ in 0..5 {
            if self.command(0, &[0u8; 6], &[], 0).await?.status == 0 {
                return Ok(());
            }
        }
        Err("TEST UNIT READY never succeeded".into())
    }

    pub async fn login_with(
        addr: SocketAddr,
        target: Option<&str>,
        isid: Isid,
        tsih: u16,
        cid: u16,
        tweak: impl FnOnce(&mut InitiatorLoginConfig),
    ) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        Self::login_on(stream, target, isid, tsih, cid, tweak).await
    }

    /// [`Conn::login_with`] on a connected stream (e.g. one bound to a
    /// chosen source address).
    pub async fn login_on(
        mut stream: TcpStream,
        target: Option<&str>,
        isid: Isid,
        tsih: u16,
        cid: u16,
        tweak: impl FnOnce(&mut InitiatorLoginConfig),
    ) -> Result<Conn, String> {
        let mut cfg = InitiatorLoginConfig::new(INITIATOR, target.map(String::from), isid);
        cfg.tsih = tsih;
        cfg.cid = cid;
        cfg.cmd_sn = CmdSn::new(1);
        tweak(&mut cfg);
        let mut login = InitiatorLogin::new(cfg);
        let mut buf = BytesMut::new();
        let mut req = login.start();
        let outcome = loop {
            let enc = Pdu::LoginRequest(req).encode(DigestConfig::NONE);
            stream
                .write_all(&enc.to_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let pdu = read_pdu(&mut stream, &mut buf, DigestConfig::NONE).await?;
            let Pdu::LoginResponse(resp) = pdu else {
                return Err(format!("unexpected {:?}", pdu.opcode()));
            };
            match login.handle_response(resp).map_err(|e| e.to_string())? {
                InitiatorStep::Send(r) => req = r,
                InitiatorStep::Complete(o) => break o,
            }
        };
        let digests = DigestConfig {
            header: outcome.connection.header_digest,
            data: outcome.connection.data_digest,
        };
        Ok(Conn {
            stream,
            buf,
            cmd_sn: outcome.cmd_sn,
            exp_stat_sn: outcome.stat_sn.successor(),
            max_cmd_sn: outcome.max_cmd_sn,
            itt: 0x100,
            digests,
            outcome,
        })
    }

    pub async fn send(&mut self, pdu: Pdu) {
        let enc = pdu.encode(self.digests);
        self.stream.write_all(&enc.to_bytes()).await.expect("send");
    }

    pub async fn recv(&mut self) -> Result<Pdu, String> {
        let p = read_pdu(&mut self.stream, &mut self.buf, self.digests).await?;
        if let Some(sn) = p.stat_sn() {
            if proto::session::stamp::consumes_stat_sn(&p) {
                self.exp_stat_sn = sn.successor();
            }
        }
        if let Some((_, max)) = p.cmd_sn_window() {
            self.max_cmd_sn = max;
        }
        Ok(p)
    }

    /// Receive with a timeout; `None` on timeout.
    pub async fn recv_timeout(&mut self, d: Duration) -> Option<Result<Pdu, String>> {
        tokio::time::timeout(d, self.recv()).await.ok()
    }

    pub fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    /// Run one SCSI command to completion through the initiator's sans-IO
    /// core (`proto::session::initiator`): immediate and unsolicited data
    /// as negotiated, Data-Out for each R2T, Data-In checks and
    /// reassembly, answers to the target's pings. The counters of this
    /// connection (CmdSN, ExpStatSN, MaxCmdSN) carry on from the core.
    pub async fn command(
        &mut self,
        lun: u64,
        cdb: &[u8],
        write: &[u8],
        read_len: u32,
    ) -> Result<CmdResult, String> {
        let now = Instant::now();
        let mut core = self.core();
        let conn = core.add_connection(
            ConnParams {
                cid: self.outcome.cid,
                exp_stat_sn: self.exp_stat_sn,
                max_send_data_segment_length: self.outcome.connection.max_send_data_segment_length,
            },
            now,
        );
        core.reset_window(self.cmd_sn, self.max_cmd_sn, now);
        let data = if !write.is_empty() {
            Data::Write(Bytes::copy_from_slice(write))
        } else if read_len > 0 {
            Data::Read {
                len: read_len,
                buf: Vec::new(),
            }
        } else {
            Data::None
        };
        let cdb = Bytes::copy_from_slice(cdb);
        core.submit(
            Command {
                lun,
                cdb,
                data,
                ctx: (),
            },
            now,
        );
        loop {
            while let Some(t) = core.poll_transmit() {
                if let Pdu::ScsiCommand(c) = &t.pdu {
                    self.cmd_sn = c.cmd_sn.successor();
                }
                self.send(t.pdu).await;
            }
            while let Some(ev) = core.poll_event() {
                match ev {
                    Event::Completed { result, .. } => {
                        let r = result.map_err(|e| e.to_string())?;
                        return Ok(CmdResult {
                            status: r.status,
                            sense: (!r.sense.is_empty()).then_some(r.sense),
                            data: r.data.into_vec(),
                            overflow: r.overflow.is_some(),
                            underflow: r.underflow.is_some(),
                            residual: r.overflow.or(r.underflow).unwrap_or(0),
                        });
                    }
                    Event::Failed { error, .. } => return Err(error.to_string()),
                    _ => {}
                }
            }
            let pdu = self.recv().await?;
            core.handle_pdu(conn, pdu, Instant::now())
                .map_err(|e| e.to_string())?;
        }
    }

    /// A one-command initiator core with this session's negotiated
    /// parameters and timers that never fire within a test.
    fn core(&self) -> InitiatorSession<()> {
        let s = &self.outcome.session;
        let never = Duration::from_secs(3600);
        let cfg = InitiatorConfig {
            immediate_data: s.immediate_data,
            initial_r2t: s.initial_r2t,
            first_burst_length: s.first_burst_length,
            max_burst_length: s.max_burst_length,
            nop_interval: never,
            nop_timeout: never,
            command_timeout: never,
            response_timeout: never,
        };
        InitiatorSession::new(cfg, self.cmd_sn)
    }

    pub async fn write10(&mut self, lba: u32, data: &[u8]) -> Result<CmdResult, String> {
        let blocks = (data.len() / 512) as u16;
        let mut cdb = [0u8; 10];
        cdb[0] = 0x2a;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.command(0, &cdb, data, 0).await
    }

    pub async fn read10(&mut self, lba: u32, blocks: u16) -> Result<CmdResult, String> {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        self.command(0, &cdb, &[], u32::from(blocks) * 512).await
    }

    /// Logout (close the session) and wait for the response.
    pub async fn logout(&mut self) -> Result<(), String> {
        let itt = self.next_itt();
        let req = LogoutRequest {
            immediate: true,
            reason_code: LogoutReason::CLOSE_SESSION,
            itt,
            cid: self.outcome.cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data: Bytes::new(),
        };
        self.send(Pdu::LogoutRequest(req)).await;
        loop {
            match self.recv().await? {
                Pdu::LogoutResponse(r) if r.itt == itt => return Ok(()),
                _ => continue,
            }
        }
    }
}

pub async fn read_pdu(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    digests: DigestConfig,
) -> Result<Pdu, String> {
    let limits = DecodeLimits {
        max_data_segment_length: 16 << 20,
        digests,
    };
    // proto's frame decoder; `buf` keeps partial frames between calls, so
    // a receive cut short by a timeout loses nothing.
    let mut codec = PduCodec::new(limits);
    loop {
        if let Some(p) = codec.decode(buf).map_err(|e| e.to_string())? {
            return Ok(p);
        }
        let n = stream.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
    }
}

/// A deterministic pseudo-random generator (xorshift), so failures repeat.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, b: &mut [u8]) {
        for chunk in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
