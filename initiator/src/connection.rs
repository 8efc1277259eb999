//! One TCP connection through the login phase (RFC 7143 §6): connect with a
//! bounded timeout, drive `proto`'s sans-IO initiator login state machine
//! (with the `chap` crate as authenticator), follow a temporary or permanent
//! redirection (status class 1, §11.13.5), and hand back the framed halves
//! with the negotiated parameters applied (digests, MaxRecvDataSegmentLength).

use std::time::Duration;

use proto::login::params::Digest;
use proto::login::{
    InitiatorLogin, InitiatorLoginConfig, InitiatorStep, LoginError, LoginOutcome,
    OperationalConfig,
};
use proto::pdu::{DecodeLimits, DigestConfig, Isid, LoginResponse, Pdu};
use proto::serial::{CmdSn, StatSn};
use tracing::Instrument;

use crate::error::{Error, LoginFailure, Result, TimedOut};
use crate::portal::Portal;
use crate::session::{ChapConfig, Offer};
pub use crate::transport::{PduReader, PduWriter};

/// What a login needs.
#[derive(Debug, Clone)]
pub struct LoginSpec {
    pub portal: Portal,
    pub initiator_name: String,
    /// `None` for a discovery session.
    pub target_name: Option<String>,
    pub isid: [u8; 6],
    /// 0 for a new session (or session reinstatement); the session's TSIH to
    /// add a connection to it.
    pub tsih: u16,
    pub cid: u16,
    pub cmd_sn: CmdSn,
    pub chap: Option<ChapConfig>,
    pub offer: Offer,
    pub max_connections: u16,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
}

/// Negotiated values the full-feature phase uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Negotiated {
    pub max_connections: u16,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub first_burst_length: u32,
    pub max_burst_length: u32,
    pub header_digest: bool,
    pub data_digest: bool,
    /// What we accept per PDU.
    pub max_recv_data_segment_length: u32,
    /// What the target accepts per PDU.
    pub max_send_data_segment_length: u32,
    pub default_time2wait: u16,
    pub target_alias: Option<String>,
    pub target_portal_group_tag: Option<u16>,
}

/// A logged-in connection.
pub struct Established {
    pub reader: PduReader,
    pub writer: PduWriter,
    /// The portal this connection logged in at (after any redirection).
    pub portal: Portal,
    pub cid: u16,
    pub tsih: u16,
    pub exp_stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub max_send_dsl: u32,
    pub negotiated: Negotiated,
}

/// RFC 7143 §11.13.5 status class/detail in words.
pub fn login_status_message(class: u8, detail: u8) -> String {
    let s = match (class, detail) {
        (1, 1) => "target moved temporarily",
        (1, 2) => "target moved permanently",
        (2, 0) => "initiator error",
        (2, 1) => "authentication failed",
        (2, 2) => "authorization failure (initiator not allowed)",
        (2, 3) => "target not found",
        (2, 4) => "target removed",
        (2, 5) => "unsupported version",
        (2, 6) => "too many connections",
        (2, 7) => "missing parameter",
        (2, 8) => "can't include in session",
        (2, 9) => "session type not supported",
        (2, 10) => "session does not exist",
        (2, 11) => "invalid request during login",
        (3, 0) => "target error",
        (3, 1) => "service unavailable",
        (3, 2) => "out of resources",
        _ => "unknown status",
    };
    s.to_string()
}

fn operational(offer: &Offer, max_connections: u16) -> OperationalConfig {
    let mut op = OperationalConfig::default();
    // Digests on request are preferred, not required: targets such as tgtd
    // do not implement them (and answer None even to a CRC32C-only offer).
    let pref = |on: bool| {
        if on {
            vec![Digest::Crc32c, Digest::None]
        } else {
            vec![Digest::None, Digest::Crc32c]
        }
    };
    op.header_digest = pref(offer.header_digest);
    op.data_digest = pref(offer.data_digest);
    op.max_connections = max_connections.max(1);
    op.initial_r2t = offer.initial_r2t;
    op.immediate_data = offer.immediate_data;
    op.first_burst_length = offer.first_burst_length.min(offer.max_burst_length);
    op.max_burst_length = offer.max_burst_length;
    op.max_recv_data_segment_length = offer.max_recv_data_segment_length;
    op
}

fn authenticator(
    chap: &Option<ChapConfig>,
) -> Result<Option<Box<dyn proto::login::auth::Authenticator>>> {
    let Some(c) = chap else { return Ok(None) };
    let creds = chap::Credentials::new(c.user.clone(), c.secret.clone());
    let mutual = c
        .mutual
        .as_ref()
        .map(|(u, s)| chap::Credentials::new(u.clone(), s.clone()));
    // Operators commonly use short secrets with tgtd; the RFC 7143 §9.2.1
    // minimum is for networks without IPsec. Accept them, as iscsiadm does.
    let mut a = chap::InitiatorChap::with_policy(creds, mutual, chap::SecretPolicy::AllowShort)
        .map_err(|e| Error::Usage(format!("CHAP: {e}")))?;
    if !c.algorithms.is_empty() {
        let prefs = c
            .algorithms
            .iter()
            .map(|&v| {
                chap::Algorithm::from_code(v.into())
                    .ok_or_else(|| Error::Usage(format!("unknown CHAP_A {v}")))
            })
            .collect::<Result<Vec<_>>>()?;
        a = a
            .with_algorithm_preference(prefs)
            .map_err(|e| Error::Usage(format!("CHAP: {e}")))?;
    }
    Ok(Some(Box::new(a)))
}

/// Connect and log in one connection, following up to 3 redirections.
pub async fn login(spec: &LoginSpec) -> Result<Established> {
    let span = conn_span(spec.isid, spec.tsih, spec.cid, &spec.portal);
    async {
        let mut portal = spec.portal.clone();
        for _ in 0..4 {
            match login_once(spec, &portal).await? {
                Ok(est) => {
                    tracing::Span::current().record("tsih", est.tsih);
                    return Ok(est);
                }
                Err(to) => {
                    tracing::info!(from = %portal, %to, "login redirected");
                    portal = to;
                }
            }
        }
        Err(LoginFailure::TooManyRedirects.into())
    }
    .instrument(span)
    .await
}

/// The span of one connection, like the target's: its login (TSIH 0 for a
/// new session, recorded once known) and then its reader and writer.
pub(crate) fn conn_span(isid: [u8; 6], tsih: u16, cid: u16, portal: &Portal) -> tracing::Span {
    tracing::info_span!(
        "conn",
        isid = %proto::name::Isid::from(isid),
        tsih,
        cid,
        %portal,
    )
}

/// `Ok(Err(portal))` means "redirected there".
async fn login_once(
    spec: &LoginSpec,
    portal: &Portal,
) -> Result<std::result::Result<Established, Portal>> {
    // One connection per address when the portal name has several.
    let stream = portal
        .connect_nth(spec.connect_timeout, usize::from(spec.cid))
        .await?;
    let (rd, wr) = stream.into_split();
    // RFC 7143 §13.12: until declared, the default 8192 applies to login PDUs.
    let mut reader = PduReader::new(rd, DecodeLimits::default());
    let mut writer = PduWriter::new(wr, DigestConfig::NONE);
    let login = InitiatorLogin::new(login_config(spec)?);
    let (outcome, last) = match exchange(login, &mut reader, &mut writer, spec, portal).await? {
        Ok(done) => done,
        Err(redirect) => return Ok(Err(redirect)),
    };
    let c = &outcome.connection;
    let digests = DigestConfig {
        header: c.header_digest,
        data: c.data_digest,
    };
    reader.set_limits(DecodeLimits {
        max_data_segment_length: c.max_recv_data_segment_length,
        digests,
    });
    writer.set_digests(digests);
    Ok(Ok(Established {
        reader,
        writer,
        portal: portal.clone(),
        cid: spec.cid,
        tsih: outcome.tsih,
        exp_stat_sn: last.stat_sn.successor(),
        exp_cmd_sn: last.exp_cmd_sn,
        max_cmd_sn: last.max_cmd_sn,
        max_send_dsl: c.max_send_data_segment_length,
        negotiated: Negotiated::from_outcome(&outcome),
    }))
}

/// The login machine's configuration for `spec`.
fn login_config(spec: &LoginSpec) -> Result<InitiatorLoginConfig> {
    let mut cfg = InitiatorLoginConfig::new(
        spec.initiator_name.clone(),
        spec.target_name.clone(),
        Isid(spec.isid),
    );
    cfg.tsih = spec.tsih;
    cfg.cid = spec.cid;
    cfg.cmd_sn = spec.cmd_sn;
    cfg.operational = operational(&spec.offer, spec.max_connections);
    cfg.authenticator = authenticator(&spec.chap)?;
    // One-way CHAP may fall back to None if the target does not ask for
    // authentication; mutual CHAP must not be skippable.
    cfg.allow_no_auth = spec.chap.as_ref().is_some_and(|c| c.mutual.is_none());
    Ok(cfg)
}

/// The Login Request/Response exchange (RFC 7143 §6.3) until the final
/// response: the outcome and that last response, or `Err(portal)` when the
/// target redirects us there (§11.13.5).
async fn exchange(
    mut login: InitiatorLogin,
    reader: &mut PduReader,
    writer: &mut PduWriter,
    spec: &LoginSpec,
    portal: &Portal,
) -> Result<std::result::Result<(LoginOutcome, LoginResponse), Portal>> {
    let mut req = login.start();
    loop {
        writer.write(&Pdu::LoginRequest(req)).await?;
        let resp = match tokio::time::timeout(spec.login_timeout, reader.read()).await {
            Err(_) => {
                return Err(Error::Timeout(TimedOut::Login {
                    portal: portal.to_string(),
                    limit: spec.login_timeout,
                }))
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok((Pdu::LoginResponse(r), _))) => r,
            Ok(Ok((other, _))) => return Err(LoginFailure::UnexpectedPdu(other.opcode()).into()),
        };
        if let Some(redirect) = redirection(&resp)? {
            return Ok(Err(redirect));
        }
        if resp.status_class != 0 {
            return Err(refused(resp.status_class, resp.status_detail));
        }
        let keep = resp.clone();
        match login.handle_response(resp) {
            Ok(InitiatorStep::Send(r)) => req = r,
            Ok(InitiatorStep::Complete(o)) => return Ok(Ok((o, keep))),
            Err(LoginError::Refused { status }) | Err(LoginError::Denied { status, .. }) => {
                return Err(refused(status.class, status.detail))
            }
            Err(LoginError::Auth(a)) => return Err(LoginFailure::Auth(a).into()),
            Err(e) => return Err(LoginFailure::Exchange(e).into()),
        }
    }
}

/// RFC 7143 §11.13.5: a redirection (status class 1) names the new portal
/// in its TargetAddress key.
fn redirection(resp: &LoginResponse) -> Result<Option<Portal>> {
    if resp.status_class != 1 {
        return Ok(None);
    }
    let kv = proto::text::parse_kv(&resp.data).unwrap_or_default();
    let Some((_, v)) = kv.iter().find(|(k, _)| k == "TargetAddress") else {
        return Ok(None);
    };
    let (addr, _) =
        proto::text::discovery::parse_target_address(v).map_err(LoginFailure::BadRedirect)?;
    Ok(Some(Portal::parse(&addr)?))
}

fn refused(class: u8, detail: u8) -> Error {
    Error::LoginRefused {
        class,
        detail,
        message: login_status_message(class, detail),
    }
}

impl Negotiated {
    /// The values of a completed login.
    fn from_outcome(o: &LoginOutcome) -> Self {
        let (s, c) = (&o.session, &o.connection);
        Negotiated {
            max_connections: s.max_connections,
            immediate_data: s.immediate_data,
            initial_r2t: s.initial_r2t,
            first_burst_length: s.first_burst_length,
            max_burst_length: s.max_burst_length,
            header_digest: c.header_digest,
            data_digest: c.data_digest,
            max_recv_data_segment_length: c.max_recv_data_segment_length,
            max_send_data_segment_length: c.max_send_data_segment_length,
            default_time2wait: s.default_time2wait,
            target_alias: s.target_alias.clone(),
            target_portal_group_tag: s.target_portal_group_tag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages() {
        assert_eq!(login_status_message(2, 3), "target not found");
        assert_eq!(login_status_message(2, 1), "authentication failed");
        assert_eq!(login_status_message(9, 9), "unknown status");
    }

    #[test]
    fn offer_maps_to_operational_config() {
        let o = Offer {
            header_digest: true,
            first_burst_length: 10 << 20,
            ..Offer::default()
        };
        let op = operational(&o, 4);
        assert_eq!(op.header_digest, vec![Digest::Crc32c, Digest::None]);
        assert_eq!(op.data_digest, vec![Digest::None, Digest::Crc32c]);
        assert_eq!(op.max_connections, 4);
        assert_eq!(op.first_burst_length, o.max_burst_length);
        assert!(!op.initial_r2t && op.immediate_data);
    }
}
