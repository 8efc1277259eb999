//! One iSCSI connection: login phase, then the full-feature phase (RFC 7143
//! §4, §11) as a thin tokio shell around the sans-IO connection core
//! `proto::session::target::TargetConn`.
//!
//! | file | what |
//! |---|---|
//! | this one | accept → login → full-feature set-up and tear-down |
//! | [`driver`] | the driver task: reads frames into the core, runs its events and commands, writes its output, re-arms its one timer |
//! | [`exec`] | the session as the core sees it (window, task table) and running a command on the device server |
//! | [`text`] | Text requests in the full-feature phase: negotiation, SendTargets |
//! | [`writer`] | the sending side: vectored writes of what the core sent |
//!
//! The rules (CmdSN window, StatSN, R2T and Data-Out checks, Data-In, NOP
//! pings, logout and TMF exchanges) are the core's; this shell moves bytes,
//! runs timers and calls the device server.
//!
//! Error recovery: ErrorRecoveryLevel 0 only (RFC 7143 §7.1.5). Any data
//! transfer or sequencing error that cannot be answered with a Reject ends
//! the connection; the session ends with its last connection. SNACK is not
//! supported (ERL 1), nor is connection recovery via Logout reason 2 or
//! TASK REASSIGN (ERL 2): those are refused with the codes the RFC defines.

mod driver;
mod exec;
mod text;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::codec::RecoverablePduCodec;
use proto::login::params::ConnectionParams;
use proto::pdu::{DecodeError, DecodeLimits, DigestConfig};
use proto::session::target::{ConnConfig, TargetConn, DEFAULT_MAX_WRITE_BUFFER};
use proto::session::{DataInLimits, WriteLimits};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, FramedParts, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::server::{ServerShared, Session};
use crate::session::ConnNotice;

/// A connection's frames: PDUs in, with non-fatal decode errors as items
/// (answered with a Reject, RFC 7143 §7.8); the limits are the negotiated
/// ones from the end of login.
pub(crate) type Frames<T> = Framed<T, RecoverablePduCodec>;

/// The reading side in the full-feature phase.
pub(crate) type FrameReader<T> = FramedRead<T, RecoverablePduCodec>;

/// Why a connection ends.
#[derive(Debug, Error)]
pub enum ConnError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable PDU: {0}")]
    Decode(#[from] DecodeError),
    #[error("NOP-In ping not answered within {0:?}")]
    PingTimeout(Duration),
    #[error("the initiator has not read our responses for {0:?}")]
    PeerNotReading(Duration),
    #[error("closed (logout elsewhere, reinstatement or shutdown)")]
    Cancelled,
}

/// Negotiated values a connection works with.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub conn: ConnectionParams,
    pub write: WriteLimits,
    pub data_in: DataInLimits,
    pub nop_interval: Option<Duration>,
    pub nop_timeout: Duration,
}

/// What the login phase hands to the full-feature phase.
pub struct Established {
    pub session: Arc<Session>,
    pub cid: u16,
    pub limits: ConnLimits,
    /// StatSN for the first full-feature response.
    pub next_stat_sn: proto::serial::StatSn,
    /// Asked to close (logout of this CID from elsewhere, reinstatement,
    /// session end).
    pub cancel: CancellationToken,
    pub notices: mpsc::UnboundedReceiver<ConnNotice>,
}

/// Serve one accepted TCP connection to the end.
pub(crate) async fn serve(
    shared: Arc<ServerShared>,
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    portal: SocketAddr,
) {
    let conn_id = shared.conn_id();
    let span = tracing::info_span!(
        "conn",
        %peer,
        id = conn_id,
        isid = tracing::field::Empty,
        tsih = tracing::field::Empty,
        cid = tracing::field::Empty
    );
    async move {
        // RFC 7143 §13.12: during login the data segment limit is 8192,
        // and there are no digests (the codec's default limits).
        let mut frames = Framed::new(stream, RecoverablePduCodec::default());
        let est = match crate::login::run(&shared, &mut frames, local, portal, conn_id).await {
            Ok(e) => e,
            Err(e) => {
                info!(error = %e, "login failed");
                return;
            }
        };
        let span = tracing::Span::current();
        span.record(
            "isid",
            tracing::field::display(hex6(&est.session.core.key.isid)),
        );
        span.record("tsih", est.session.core.tsih);
        span.record("cid", est.cid);
        info!(
            initiator = %est.session.core.initiator_name,
            target = %est.session.core.target_name,
            kind = ?est.session.core.kind,
            "logged in"
        );
        full_feature(shared, frames, est, local, conn_id).await;
    }
    .instrument(span)
    .await
}

fn hex6(b: &[u8; 6]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The connection core's configuration from what login negotiated.
fn core_config(est: &Established) -> ConnConfig {
    let l = &est.limits;
    ConnConfig {
        write: l.write,
        data_in: l.data_in,
        discovery: est.session.is_discovery(),
        cid: est.cid,
        first_stat_sn: est.next_stat_sn,
        nop_interval: l.nop_interval,
        nop_timeout: l.nop_timeout,
        max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
    }
}

async fn full_feature(
    shared: Arc<ServerShared>,
    frames: Frames<TcpStream>,
    est: Established,
    local: SocketAddr,
    conn_id: u64,
) {
    let digests = DigestConfig {
        header: est.limits.conn.header_digest,
        data: est.limits.conn.data_digest,
    };
    // RFC 7143 §13.1, §13.12: digests and our MaxRecvDataSegmentLength
    // apply from the first PDU after the final Login Response; the bytes
    // already read stay in the read buffer.
    // Only the reading side stays framed (the driver writes with its own
    // queue): the login's write buffer goes now, and no other is made.
    let FramedParts {
        io,
        mut codec,
        read_buf,
        ..
    } = frames.into_parts();
    let (rd, wr) = io.into_split();
    codec.set_limits(DecodeLimits {
        max_data_segment_length: est.limits.conn.max_recv_data_segment_length,
        digests,
    });
    let mut frames = FramedRead::with_capacity(rd, codec, 0);
    *frames.read_buffer_mut() = read_buf;
    let session = est.session.clone();
    let hooks = exec::SessionHooks::new(session.clone(), conn_id);
    let core = TargetConn::new(hooks, core_config(&est), std::time::Instant::now());
    let mut conn = driver::Conn::new(driver::Setup {
        shared: shared.clone(),
        session: est.session,
        conn_id,
        local,
        out: writer::Output::new(wr, digests),
        cancel: est.cancel,
        notices: est.notices,
        limits: est.limits,
        core,
    });
    let result = conn.run(frames).await;
    match &result {
        Ok(()) => debug!("connection closed"),
        Err(ConnError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            debug!("initiator closed the connection")
        }
        Err(e) => warn!(error = %e, "connection dropped"),
    }
    // Flush what is queued (e.g. a Logout Response), for a bounded time.
    conn.finish(Duration::from_secs(2)).await;
    let left = session.core.remove_connection(conn_id);
    if left == 0 || session.core.is_closed() {
        shared.end_session(&session).await;
        info!("session ended");
    }
}
