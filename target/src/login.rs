//! Login phase of a connection (RFC 7143 §6): drives `proto`'s sans-IO
//! [`TargetLogin`] over the socket, answers its policy questions (which
//! target, ACL, CHAP, session table) and registers the connection in a new
//! or existing session.
//!
//! - RFC 7143 §6.3.5 session reinstatement: a new session (TSIH 0) with the
//!   (InitiatorName, ISID) of an existing session of the same target
//!   replaces it; the old session's tasks are terminated.
//! - RFC 7143 §6.3.4 connection reinstatement: a connection joining with a
//!   CID already in use replaces that connection.
//! - The whole login must finish within the target's login timeout; an
//!   idle or slow peer is dropped.
//! - Authentication (RFC 7143 §12.1.3 CHAP): discovery sessions use the
//!   discovery accounts; normal sessions use the accounts of the
//!   initiator's ACL entry when it has its own
//!   ([`crate::config::TargetConfig::auth_for`]), else the target-wide ones.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use proto::codec::CodecError;
use proto::login::params::{Digest, OperationalConfig, SessionType};
use proto::login::{
    Admission, LoginIdentity, LoginOutcome, LoginStatus, SessionJoin, TargetLogin,
    TargetLoginConfig, TargetLoginPolicy, TargetStep,
};
use proto::pdu::{DigestConfig, Pdu};
use proto::serial::StatSn;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{AuthConfig, SessionLimits};
use crate::conn::{ConnLimits, Established, Frames};
use crate::server::{ServerShared, Session, TargetRuntime};
use crate::session::{ConnHandle, ConnNotice, SessionCore, SessionKey, SessionKind};
use crate::sync::{lock, read_lock};
use proto::session::{DataInLimits, WriteLimits};

/// Why a login did not produce a connection.
#[derive(Debug, thiserror::Error)]
pub enum LoginFailure {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("login timed out after {0:?}")]
    Timeout(Duration),
    #[error("undecodable PDU during login: {0}")]
    Decode(#[from] proto::pdu::DecodeError),
    #[error("{0} PDU during login")]
    UnexpectedPdu(String),
    #[error("refused: {0}")]
    Refused(#[from] proto::login::LoginError),
    #[error("connection closed during login")]
    Closed,
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The operational limits a target offers, from its configuration.
pub fn operational_config(l: &SessionLimits) -> OperationalConfig {
    let digests = |on: bool| {
        if on {
            vec![Digest::None, Digest::Crc32c]
        } else {
            vec![Digest::None]
        }
    };
    OperationalConfig {
        header_digest: digests(l.header_digest),
        data_digest: digests(l.data_digest),
        max_connections: l.max_connections,
        initial_r2t: l.initial_r2t,
        immediate_data: l.immediate_data,
        max_recv_data_segment_length: l.max_recv_data_segment_length,
        max_burst_length: l.max_burst_length,
        first_burst_length: l.first_burst_length,
        max_outstanding_r2t: l.max_outstanding_r2t,
        ..OperationalConfig::default()
    }
}

fn authenticator(auth: &AuthConfig) -> Option<Box<dyn proto::login::auth::Authenticator>> {
    if auth.incoming.is_empty() {
        return None;
    }
    let accounts: Vec<(String, Vec<u8>)> = auth
        .incoming
        .iter()
        .map(|c| (c.user.clone(), c.secret.clone()))
        .collect();
    let lookup: chap::SecretLookup = Box::new(move |user: &str| {
        accounts
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, s)| s.clone())
    });
    let mutual = auth
        .outgoing
        .as_ref()
        .map(|c| chap::Credentials::new(c.user.clone(), c.secret.clone()));
    // Short secrets are accepted (test setups); RFC 7143 §9.2.1 wants 12+
    // bytes without IPsec, which the CLI warns about.
    match chap::TargetChap::with_policy(
        lookup,
        mutual,
        chap::Algorithm::ALL.to_vec(),
        16,
        chap::SecretPolicy::AllowShort,
    ) {
        Ok(c) => Some(Box::new(c)),
        Err(e) => {
            tracing::error!(error = %e, "CHAP configuration rejected");
            None
        }
    }
}

/// Does `portal` (the listener the connection came in on) belong to one of
/// the target's portal groups? Returns its TPGT.
fn tpgt_for(t: &TargetRuntime, portal: SocketAddr) -> Option<u16> {
    let cfg = t.config();
    cfg.portal_groups
        .iter()
        .find(|g| g.portals.contains(&portal))
        .map(|g| g.tpgt)
}

struct Policy<'a> {
    shared: &'a ServerShared,
    portal: SocketAddr,
    gate: Gate,
    target: Option<Arc<TargetRuntime>>,
    join: Option<Arc<Session>>,
    new_tsih: Option<u16>,
}

impl Policy<'_> {
    /// The admission caps and the authentication backoff (`crate::limits`),
    /// checked before any session or connection is committed.
    fn check_caps(&self, id: &LoginIdentity) -> Result<(), LoginStatus> {
        let l = &self.shared.limits;
        if self.gate.over_login_cap {
            warn!(
                max = l.max_logins_in_progress,
                "login refused: too many logins in progress"
            );
            return Err(LoginStatus::OUT_OF_RESOURCES);
        }
        if let Some(ip) = self.gate.peer {
            if let Some(wait) = lock(&self.shared.auth_backoff).remaining(ip, Instant::now()) {
                warn!(source = %ip, wait_ms = wait.as_millis() as u64, "login refused: source in authentication backoff");
                return Err(LoginStatus::SERVICE_UNAVAILABLE);
            }
        }
        let sessions = self.shared.sessions.all();
        let live = || sessions.iter().filter(|s| !s.core.is_closed());
        let conns: usize = live()
            .filter(|s| {
                s.core
                    .initiator_name
                    .eq_ignore_ascii_case(&id.initiator_name)
            })
            .map(|s| s.core.connection_count())
            .sum();
        if conns >= l.max_connections_per_initiator {
            warn!(initiator = %id.initiator_name, max = l.max_connections_per_initiator, "login refused: too many connections from this initiator");
            return Err(LoginStatus::OUT_OF_RESOURCES);
        }
        if let (SessionType::Normal, 0, Some(t)) = (id.session_type, id.tsih, &id.target_name) {
            let n = live()
                .filter(|s| !s.is_discovery() && s.core.target_name.eq_ignore_ascii_case(t))
                .count();
            if n >= l.max_sessions_per_target {
                warn!(target = %t, max = l.max_sessions_per_target, "login refused: too many sessions on the target");
                return Err(LoginStatus::OUT_OF_RESOURCES);
            }
        }
        Ok(())
    }
}

/// Record a failed authentication from `peer` (its address and counts are
/// logged, never the secret or the CHAP response).
fn auth_failed(shared: &ServerShared, peer: Option<IpAddr>) {
    let Some(ip) = peer else { return };
    if let Some(wait) = lock(&shared.auth_backoff).failed(ip, Instant::now(), &shared.limits) {
        warn!(source = %ip, backoff_ms = wait.as_millis() as u64, "authentication failed: source backs off");
    }
}

impl TargetLoginPolicy for Policy<'_> {
    fn admit(&mut self, id: &LoginIdentity) -> Result<Admission, LoginStatus> {
        self.check_caps(id)?;
        match id.session_type {
            SessionType::Discovery => {
                let auth = read_lock(&self.shared.discovery_auth).clone();
                Ok(Admission {
                    authenticator: authenticator(&auth),
                    target_alias: None,
                    operational: None,
                })
            }
            SessionType::Normal => {
                let name = id
                    .target_name
                    .as_deref()
                    .ok_or(LoginStatus::MISSING_PARAMETER)?;
                let t = self.shared.target(name).ok_or(LoginStatus::NOT_FOUND)?;
                if tpgt_for(&t, self.portal).is_none() {
                    // Not exported through this portal.
                    return Err(LoginStatus::NOT_FOUND);
                }
                let cfg = t.config();
                if !cfg.allows(&id.initiator_name) {
                    return Err(LoginStatus::AUTHORIZATION_FAILURE);
                }
                self.target = Some(t);
                // Per-initiator CHAP: an initiator whose ACL entry has its
                // own accounts must use them (the target-wide ones are
                // refused for it). Read at every login, so a runtime
                // `set-chap` applies to the next login.
                let auth = cfg.auth_for(&id.initiator_name);
                Ok(Admission {
                    authenticator: authenticator(&auth),
                    target_alias: cfg.alias.clone(),
                    operational: Some(operational_config(&cfg.limits)),
                })
            }
        }
    }

    fn join_session(&mut self, id: &LoginIdentity) -> Result<SessionJoin, LoginStatus> {
        let s = self
            .shared
            .sessions
            .get(id.tsih)
            .ok_or(LoginStatus::SESSION_DOES_NOT_EXIST)?;
        let key = SessionKey::new(
            &id.initiator_name,
            id.isid.0,
            id.target_name.as_deref().unwrap_or(""),
        );
        if s.core.key != key || s.core.is_closed() {
            return Err(LoginStatus::SESSION_DOES_NOT_EXIST);
        }
        if s.is_discovery() {
            return Err(LoginStatus::CANT_INCLUDE_IN_SESSION);
        }
        let replacing = s.core.cids().contains(&id.cid);
        if !replacing && s.core.connection_count() >= usize::from(s.core.max_connections) {
            return Err(LoginStatus::TOO_MANY_CONNECTIONS);
        }
        let (exp, max) = s.core.window_snapshot();
        let join = SessionJoin {
            session: s.params.clone(),
            exp_cmd_sn: exp,
            max_cmd_sn: max,
        };
        self.join = Some(s);
        Ok(join)
    }

    fn new_session(
        &mut self,
        _id: &LoginIdentity,
        _session: &proto::login::SessionParams,
    ) -> Result<u16, LoginStatus> {
        if self.shared.shutdown.is_cancelled() {
            return Err(LoginStatus::SERVICE_UNAVAILABLE);
        }
        let tsih = self.shared.sessions.allocate_tsih();
        self.new_tsih = Some(tsih);
        Ok(tsih)
    }
}

/// Run the login phase on a fresh connection.
pub(crate) async fn run(
    shared: &Arc<ServerShared>,
    stream: &mut Frames<TcpStream>,
    local: SocketAddr,
    portal: SocketAddr,
    conn_id: u64,
) -> Result<Established, LoginFailure> {
    let _ = local;
    let targets = shared.all_targets();
    // The login timeout and the TPGT of this portal come from the first
    // target exported here (all targets share the portal's TPGT in the
    // quick-start configuration).
    let (timeout, tpgt, depth) = targets
        .iter()
        .find_map(|t| {
            tpgt_for(t, portal).map(|g| {
                let c = t.config();
                (c.limits.login_timeout, g, c.limits.queue_depth)
            })
        })
        .unwrap_or((Duration::from_secs(15), 1, 128));
    // Counted from here to the end of the login phase; over the cap, the
    // login is answered "out of resources" once its first request arrives.
    let slot = LoginSlot::take(shared);
    let gate = Gate {
        peer: stream.get_ref().peer_addr().ok().map(|a| a.ip()),
        over_login_cap: slot.over_cap,
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, login(shared, stream, portal, conn_id, tpgt, depth, gate)) => {
            r.map_err(|_| LoginFailure::Timeout(timeout))?
        }
        _ = shared.shutdown.cancelled() => Err(LoginFailure::ShuttingDown),
    }
}

/// One connection in the login phase (`ServerShared::logins_in_progress`).
struct LoginSlot<'a> {
    shared: &'a ServerShared,
    over_cap: bool,
}

impl<'a> LoginSlot<'a> {
    fn take(shared: &'a ServerShared) -> Self {
        let now = shared.logins_in_progress.fetch_add(1, Ordering::AcqRel) + 1;
        LoginSlot {
            shared,
            over_cap: now > shared.limits.max_logins_in_progress,
        }
    }
}

impl Drop for LoginSlot<'_> {
    fn drop(&mut self) {
        self.shared
            .logins_in_progress
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// What admission knows about the connection before its first request.
#[derive(Clone, Copy)]
struct Gate {
    peer: Option<IpAddr>,
    over_login_cap: bool,
}

async fn read_pdu(stream: &mut Frames<TcpStream>) -> Result<Pdu, LoginFailure> {
    match stream.next().await {
        Some(Ok(Ok(p))) => Ok(p),
        Some(Ok(Err(e)) | Err(CodecError::Decode(e))) => Err(e.into()),
        Some(Err(CodecError::Io(e))) => Err(e.into()),
        None => Err(LoginFailure::Closed),
    }
}

/// The next Login Request. Any other PDU (0x020b "invalid request type
/// during login"), or one that cannot be decoded (0x0200 "initiator
/// error"), ends the login with a Login Response (RFC 7143 §11.13.5)
/// carrying the offending PDU's ITT when its header
/// arrived, then the connection closes: the initiator learns why instead
/// of seeing a bare disconnect.
async fn next_request(
    stream: &mut Frames<TcpStream>,
    machine: &mut TargetLogin,
) -> Result<proto::pdu::LoginRequest, LoginFailure> {
    let (itt, failure) = match read_pdu(stream).await {
        Ok(Pdu::LoginRequest(r)) => return Ok(r),
        Ok(other) => (
            Some(other.itt()),
            LoginFailure::UnexpectedPdu(format!("{:?}", other.opcode())),
        ),
        Err(LoginFailure::Decode(e)) => {
            // A consumed PDU's header comes with the error; after a fatal
            // error the header is still at the front of the read buffer.
            let header = e.rejected_header().cloned();
            let raw = header.as_deref().unwrap_or(&stream.read_buffer()[..]);
            let itt = raw
                .get(16..20)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            (itt, LoginFailure::Decode(e))
        }
        Err(e) => return Err(e),
    };
    debug!(error = %failure, "login refused: not a Login Request");
    let decoded = matches!(failure, LoginFailure::UnexpectedPdu(_));
    let resp = machine.refuse_pdu(itt, decoded);
    let _ = write_pdu(stream, Pdu::LoginResponse(resp)).await;
    let _ = stream.get_mut().shutdown().await;
    Err(failure)
}

async fn write_pdu(stream: &mut Frames<TcpStream>, pdu: Pdu) -> Result<(), LoginFailure> {
    let enc = pdu.encode(DigestConfig::NONE);
    stream.get_mut().write_all(&enc.to_bytes()).await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn login(
    shared: &Arc<ServerShared>,
    stream: &mut Frames<TcpStream>,
    portal: SocketAddr,
    conn_id: u64,
    tpgt: u16,
    depth: u32,
    gate: Gate,
) -> Result<Established, LoginFailure> {
    let cfg = TargetLoginConfig {
        target_portal_group_tag: tpgt,
        initial_stat_sn: StatSn::new(rand::random::<u32>() >> 8),
        cmd_window: depth.max(1),
        ..TargetLoginConfig::default()
    };
    let mut machine = TargetLogin::new(cfg);
    let mut policy = Policy {
        shared,
        portal,
        gate,
        target: None,
        join: None,
        new_tsih: None,
    };
    let (resp, outcome) = loop {
        let req = next_request(stream, &mut machine).await?;
        match machine.handle_request(req, &mut policy) {
            TargetStep::Send(resp) => write_pdu(stream, Pdu::LoginResponse(resp)).await?,
            TargetStep::Complete(resp, outcome) => {
                if let Some(ip) = gate.peer {
                    lock(&shared.auth_backoff).succeeded(ip);
                }
                break (resp, outcome);
            }
            TargetStep::Fail(resp, err) => {
                // RFC 7143 §11.13.5: the reject status is sent, then the
                // connection closes.
                debug!(status = ?LoginStatus::of(&resp), "login refused");
                if LoginStatus::of(&resp) == LoginStatus::AUTHENTICATION_FAILURE {
                    auth_failed(shared, gate.peer);
                }
                let _ = write_pdu(stream, Pdu::LoginResponse(resp)).await;
                let _ = stream.get_mut().shutdown().await;
                return Err(err.into());
            }
        }
    };
    let id = machine
        .identity()
        .cloned()
        .ok_or_else(|| LoginFailure::UnexpectedPdu("login without identity".into()))?;
    let cancel = CancellationToken::new();
    let (ntx, nrx) = mpsc::unbounded_channel();
    let handle = ConnHandle {
        cid: outcome.cid,
        cancel: cancel.clone(),
        notify: ntx,
        id: conn_id,
    };
    let session = if let Some(s) = policy.join.take() {
        if let Some(old) = s.core.add_connection(handle) {
            // Connection reinstatement: the old connection goes away.
            old.cancel.cancel();
        }
        s
    } else {
        new_session(shared, &policy, &id, &outcome, tpgt, depth, handle).await
    };
    write_pdu(stream, Pdu::LoginResponse(resp)).await?;
    Ok(established(session, &outcome, cancel, nrx))
}

/// A new session for a completed leading login, with `handle` as its
/// first connection; an old session with the same key ends (session
/// reinstatement, RFC 7143 §6.3.5).
async fn new_session(
    shared: &Arc<ServerShared>,
    policy: &Policy<'_>,
    id: &LoginIdentity,
    outcome: &LoginOutcome,
    tpgt: u16,
    depth: u32,
    handle: ConnHandle,
) -> Arc<Session> {
    let tsih = policy.new_tsih.unwrap_or(outcome.tsih);
    let kind = match id.session_type {
        SessionType::Discovery => SessionKind::Discovery,
        SessionType::Normal => SessionKind::Normal,
    };
    let target_name = id.target_name.clone().unwrap_or_default();
    let (max_conns, queue_depth) = match &policy.target {
        Some(t) => {
            let c = t.config();
            (outcome.session.max_connections, c.limits.queue_depth)
        }
        None => (1, depth),
    };
    let core = SessionCore::new(
        tsih,
        SessionKey::new(&id.initiator_name, id.isid.0, &target_name),
        kind,
        id.initiator_name.clone(),
        target_name.clone(),
        tpgt,
        max_conns,
        outcome.cmd_sn,
        queue_depth,
    );
    let nexus = policy
        .target
        .as_ref()
        .map(|_| crate::device::nexus(&id.initiator_name, id.isid.0, &target_name, tpgt));
    let s = Arc::new(Session::new(
        core,
        outcome.session.clone(),
        policy.target.clone(),
        nexus,
    ));
    s.core.add_connection(handle);
    if let Some(old) = shared.sessions.insert(s.clone()) {
        // Session reinstatement (RFC 7143 §6.3.5).
        tracing::info!(old_tsih = old.core.tsih, "session reinstatement");
        shared.end_session(&old).await;
    }
    s
}

/// What the connection driver needs from a completed login: the limits
/// negotiated for the session and the connection (RFC 7143 §13), the NOP
/// timers of the target, and the next StatSN.
fn established(
    session: Arc<Session>,
    outcome: &LoginOutcome,
    cancel: CancellationToken,
    notices: mpsc::UnboundedReceiver<ConnNotice>,
) -> Established {
    let (nop_interval, nop_timeout) = match &session.target {
        Some(t) => {
            let c = t.config();
            (c.limits.nop_interval, c.limits.nop_timeout)
        }
        None => (None, Duration::from_secs(30)),
    };
    let p = &session.params;
    let conn = outcome.connection;
    Established {
        cid: outcome.cid,
        limits: ConnLimits {
            conn,
            write: WriteLimits {
                immediate_data: p.immediate_data,
                initial_r2t: p.initial_r2t,
                first_burst_length: p.first_burst_length,
                max_burst_length: p.max_burst_length,
                max_outstanding_r2t: u32::from(p.max_outstanding_r2t),
                max_recv_data_segment_length: conn.max_recv_data_segment_length,
            },
            data_in: DataInLimits {
                max_send_data_segment_length: conn.max_send_data_segment_length,
                max_burst_length: p.max_burst_length,
            },
            nop_interval,
            nop_timeout,
        },
        next_stat_sn: outcome.stat_sn.successor(),
        cancel,
        notices,
        session,
    }
}
