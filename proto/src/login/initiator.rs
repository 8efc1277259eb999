//! The initiator's login state machine (RFC 7143 §6.3, §11.12, §11.13),
//! sans-IO: [`InitiatorLogin::start`] gives the first Login Request, each
//! Login Response goes to [`InitiatorLogin::handle_response`], which gives
//! the next request or the negotiated outcome.
//!
//! Transitions (CSG = current stage; T/NSG from the response):
//!
//! ```text
//! state        response                          action
//! ----------   -------------------------------   -------------------------------------
//! any          status class 1                    Err(Redirect{TargetAddress...})
//! any          status class 2/3                  Err(Refused{status})
//! any          C=1                               accumulate; send empty request (same CSG)
//! our text     (we sent C=1)                     send the next segment when the target
//!  pending                                        acknowledges with an empty response
//! Security     AuthMethod=<ours> agreed          Authenticator::step(&[]) → send its keys
//! Security     auth keys                         Authenticator::step(keys): Continue → T=1
//!                                                 (T=0 for the opening step), Done → T=1
//!                                                 NSG=Operational, Failed → Err
//! Security     T=1 NSG=Operational               → Operational: send offers, T=1 NSG=FFP
//! Security     T=1 NSG=FFP                       → Complete (operational stage skipped)
//! Operational  T=0                               answer target offers; T=1 NSG=FFP
//! Operational  T=1 NSG=FFP                       → Complete(LoginOutcome)
//! ```
//!
//! RFC 7143 rules enforced on the target's responses:
//! - §11.13: "The target MUST NOT set T=1 ... unless the initiator has set
//!   T=1" (we check the T bit of our last request) and NSG never goes
//!   beyond what we asked for, never backwards.
//! - §11.13.3: T and C are never both 1.
//! - The target may not end the security stage before a chosen
//!   authentication method has completed on our side (mutual CHAP).
//! - §11.13.4: a new session's final response carries a non-zero TSIH; a
//!   joining connection's carries ours.
//! - CmdSN stays the same in every Login Request (the I bit is set);
//!   ExpStatSN follows the last StatSN + 1.
//! - Leading-only keys (SessionType, session parameters) are not sent when
//!   `tsih != 0`.
//! - A bounded number of Login Responses ([`InitiatorLoginConfig::max_pdus`]).

use bytes::Bytes;

use super::auth::{AuthFailure, AuthStep, Authenticator};
use super::error::LoginError;
use super::params::{OperationalConfig, SessionType, DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH};
use super::status::LoginStatus;
use super::LoginOutcome;
use crate::pdu::{Isid, LoginRequest, LoginResponse, Stage};
use crate::serial::{CmdSn, StatSn};
use crate::text::keys::{self, lookup, parse_number};
use crate::text::negotiate::{Negotiator, Processed, Role};
use crate::text::{
    encode_kv, parse_kv, KeyValue, TextAccumulator, TextSender, DEFAULT_MAX_TEXT_LEN,
};

/// The only iSCSI version (RFC 7143 §11.12.4: "the version number ... is 0x00").
pub const ISCSI_VERSION: u8 = 0;

/// Everything the initiator needs to log in.
pub struct InitiatorLoginConfig {
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// `None` for a discovery session.
    pub target_name: Option<String>,
    pub session_type: SessionType,
    pub isid: Isid,
    /// 0 for a new session; the session's TSIH to add a connection to it.
    pub tsih: u16,
    pub cid: u16,
    /// Initiator Task Tag of the Login Requests.
    pub itt: u32,
    /// CmdSN of the Login Requests (the session's first CmdSN for a new session).
    pub cmd_sn: CmdSn,
    /// ExpStatSN of the first Login Request (0 on a new connection).
    pub exp_stat_sn: StatSn,
    pub operational: OperationalConfig,
    /// `None`: offer `AuthMethod=None` only, and skip the security stage.
    pub authenticator: Option<Box<dyn Authenticator>>,
    /// With an authenticator, also offer `None` (e.g. `AuthMethod=CHAP,None`),
    /// letting the target decide. Off by default: a configured secret means
    /// authentication is wanted (and mutual CHAP must not be skippable).
    pub allow_no_auth: bool,
    /// Largest data segment we put in a Login Request (the target's
    /// MaxRecvDataSegmentLength during login is the 8192 default).
    pub max_segment: usize,
    /// Bound on the total size of a (continued) Login Response text.
    pub max_text_len: usize,
    /// Bound on the number of Login Responses (a looping target).
    pub max_pdus: u32,
}

impl InitiatorLoginConfig {
    /// A configuration with the defaults: normal session if `target_name`
    /// is given, discovery otherwise; new session (TSIH 0), CID 0, ITT 0,
    /// CmdSN 0, no authentication.
    pub fn new(initiator_name: impl Into<String>, target_name: Option<String>, isid: Isid) -> Self {
        let session_type = if target_name.is_some() {
            SessionType::Normal
        } else {
            SessionType::Discovery
        };
        InitiatorLoginConfig {
            initiator_name: initiator_name.into(),
            initiator_alias: None,
            target_name,
            session_type,
            isid,
            tsih: 0,
            cid: 0,
            itt: 0,
            cmd_sn: CmdSn::new(0),
            exp_stat_sn: StatSn::new(0),
            operational: OperationalConfig::default(),
            authenticator: None,
            allow_no_auth: false,
            max_segment: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH as usize,
            max_text_len: DEFAULT_MAX_TEXT_LEN,
            max_pdus: 64,
        }
    }
}

impl core::fmt::Debug for InitiatorLoginConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InitiatorLoginConfig")
            .field("initiator_name", &self.initiator_name)
            .field("target_name", &self.target_name)
            .field("session_type", &self.session_type)
            .field("isid", &self.isid)
            .field("tsih", &self.tsih)
            .field("cid", &self.cid)
            .field(
                "auth",
                &self.authenticator.as_ref().map(|a| a.method().to_string()),
            )
            .finish_non_exhaustive()
    }
}

/// What to do after a Login Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitiatorStep {
    /// Send this Login Request and wait for the next response.
    Send(LoginRequest),
    /// Login complete: the connection is in the full-feature phase.
    Complete(LoginOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthState {
    /// No authentication (none configured, or the target chose None).
    NotUsed,
    /// AuthMethod offered, no answer yet.
    Offered,
    /// The authenticator is exchanging keys.
    Running,
    /// Our authenticator is satisfied.
    Done,
}

/// The initiator side of one connection's login.
pub struct InitiatorLogin {
    initiator_name: String,
    initiator_alias: Option<String>,
    target_name: Option<String>,
    session_type: SessionType,
    isid: Isid,
    tsih: u16,
    cid: u16,
    itt: u32,
    cmd_sn: CmdSn,
    exp_stat_sn: StatSn,
    allow_no_auth: bool,
    max_segment: usize,
    max_pdus: u32,
    authenticator: Option<Box<dyn Authenticator>>,
    neg: Negotiator,
    stage: Stage,
    auth: AuthState,
    incoming: TextAccumulator,
    outgoing: TextSender,
    /// T and NSG for the last segment of the text being sent.
    out_transit: bool,
    out_nsg: Stage,
    /// T and NSG of the last complete request sent.
    last_transit: bool,
    last_nsg: Stage,
    pdus: u32,
    started: bool,
    finished: bool,
    target_portal_group_tag: Option<u16>,
    target_alias: Option<String>,
}

impl InitiatorLogin {
    /// A login that has not sent anything yet.
    pub fn new(cfg: InitiatorLoginConfig) -> Self {
        let leading = cfg.tsih == 0;
        let mut neg = Negotiator::new(Role::Initiator, cfg.operational, cfg.session_type, leading);
        if let Some(a) = &cfg.authenticator {
            let mut methods = vec![a.method().to_string()];
            if cfg.allow_no_auth {
                methods.push(keys::NONE.to_string());
            }
            neg.set_auth_methods(methods);
        }
        InitiatorLogin {
            initiator_name: cfg.initiator_name,
            initiator_alias: cfg.initiator_alias,
            target_name: cfg.target_name,
            session_type: cfg.session_type,
            isid: cfg.isid,
            tsih: cfg.tsih,
            cid: cfg.cid,
            itt: cfg.itt,
            cmd_sn: cfg.cmd_sn,
            exp_stat_sn: cfg.exp_stat_sn,
            allow_no_auth: cfg.allow_no_auth,
            max_segment: cfg.max_segment,
            max_pdus: cfg.max_pdus,
            authenticator: cfg.authenticator,
            neg,
            stage: Stage::SecurityNegotiation,
            auth: AuthState::NotUsed,
            incoming: TextAccumulator::new(cfg.max_text_len),
            outgoing: TextSender::default(),
            out_transit: false,
            out_nsg: Stage::SecurityNegotiation,
            last_transit: false,
            last_nsg: Stage::SecurityNegotiation,
            pdus: 0,
            started: false,
            finished: false,
            target_portal_group_tag: None,
            target_alias: None,
        }
    }

    /// The current stage (CSG).
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The ExpStatSN to use on this connection (last StatSN + 1).
    pub fn exp_stat_sn(&self) -> StatSn {
        self.exp_stat_sn
    }

    /// The first Login Request. Call it once, before any response.
    pub fn start(&mut self) -> LoginRequest {
        self.started = true;
        let mut kvs: Vec<KeyValue> = Vec::new();
        // RFC 7143 §6.3: "The initiator MUST present both its iSCSI
        // Initiator Name and the iSCSI Target Name to which it wishes to
        // connect in the first Login Request of a new session or connection.
        // The only exception is if a discovery session is to be established."
        let mut declare = |neg: &mut Negotiator, k: &str, v: &str| {
            if let Some(def) = lookup(k) {
                kvs.push(neg.offer(def, v.to_string()));
            }
        };
        declare(&mut self.neg, keys::INITIATOR_NAME, &self.initiator_name);
        if let Some(a) = &self.initiator_alias {
            declare(&mut self.neg, keys::INITIATOR_ALIAS, a);
        }
        if let Some(t) = &self.target_name {
            declare(&mut self.neg, keys::TARGET_NAME, t);
        }
        // SessionType is LO: only on the leading connection.
        if self.tsih == 0 {
            declare(
                &mut self.neg,
                keys::SESSION_TYPE,
                self.session_type.as_str(),
            );
        }
        if let Some(a) = &self.authenticator {
            // Security stage with our method offered.
            let mut methods = a.method().to_string();
            if self.allow_no_auth {
                methods.push_str(",None");
            }
            if let Some(def) = lookup(keys::AUTH_METHOD) {
                kvs.push(self.neg.offer(def, methods));
            }
            self.auth = AuthState::Offered;
            self.stage = Stage::SecurityNegotiation;
            // Ready to transit only if the target may pick None.
            self.send_text(kvs, self.allow_no_auth, Stage::LoginOperationalNegotiation)
        } else {
            // No authentication: start directly in the operational stage
            // (RFC 7143 §6.3 allows the initiator to skip the security stage).
            self.stage = Stage::LoginOperationalNegotiation;
            kvs.extend(self.neg.operational_offers());
            self.send_text(kvs, true, Stage::FullFeaturePhase)
        }
    }

    fn request(&self, data: Bytes, continue_: bool, transit: bool, nsg: Stage) -> LoginRequest {
        LoginRequest {
            transit,
            continue_,
            csg: self.stage,
            nsg,
            version_max: ISCSI_VERSION,
            version_min: ISCSI_VERSION,
            isid: self.isid,
            tsih: self.tsih,
            itt: self.itt,
            cid: self.cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data,
        }
    }

    /// Send `kvs` (cut for C-bit continuation if needed); the last segment
    /// carries T=`transit` and `nsg`.
    fn send_text(&mut self, kvs: Vec<KeyValue>, transit: bool, nsg: Stage) -> LoginRequest {
        self.outgoing = TextSender::new(encode_kv(&kvs), self.max_segment);
        self.out_transit = transit;
        self.out_nsg = nsg;
        self.next_segment()
    }

    fn next_segment(&mut self) -> LoginRequest {
        let (seg, more) = self.outgoing.next_segment().unwrap_or_default();
        if more {
            // RFC 7143 §11.12.2: C=1 requires T=0.
            self.request(seg, true, false, self.out_nsg)
        } else {
            // The T bit the target's answer is checked against (empty
            // requests that only fetch a continued response do not count).
            self.last_transit = self.out_transit;
            self.last_nsg = self.out_nsg;
            self.request(seg, false, self.out_transit, self.out_nsg)
        }
    }

    /// Feed one Login Response.
    pub fn handle_response(&mut self, resp: LoginResponse) -> Result<InitiatorStep, LoginError> {
        if self.finished || !self.started {
            return Err(LoginError::Protocol(
                "Login Response outside of a login in progress".into(),
            ));
        }
        let r = self.handle_inner(resp);
        if !matches!(r, Ok(InitiatorStep::Send(_))) {
            self.finished = true;
        }
        r
    }

    fn handle_inner(&mut self, resp: LoginResponse) -> Result<InitiatorStep, LoginError> {
        self.pdus += 1;
        if self.pdus > self.max_pdus {
            return Err(LoginError::TooManyRoundTrips(self.max_pdus));
        }
        // The status first: some targets (tgt) leave ISID/ITT zero in error
        // responses, and the status is what the user needs to see.
        let status = LoginStatus::of(&resp);
        if status.is_redirect() {
            // RFC 7143 §11.13.5: redirection responses carry TargetAddress keys.
            let addresses = parse_kv(&resp.data)
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| k == keys::TARGET_ADDRESS)
                .map(|(_, v)| v)
                .collect();
            return Err(LoginError::Redirect {
                status,
                permanent: status == LoginStatus::TARGET_MOVED_PERMANENTLY,
                addresses,
            });
        }
        if !status.is_success() {
            return Err(LoginError::Refused { status });
        }
        if resp.isid != self.isid || resp.itt != self.itt {
            return Err(LoginError::Protocol(format!(
                "response for ISID {} ITT {:#x}, expected ISID {} ITT {:#x}",
                resp.isid, resp.itt, self.isid, self.itt
            )));
        }
        if resp.version_active != ISCSI_VERSION {
            return Err(LoginError::Protocol(format!(
                "target chose unsupported version {}",
                resp.version_active
            )));
        }
        self.exp_stat_sn = resp.stat_sn.wrapping_add(1);
        if resp.csg != self.stage {
            return Err(LoginError::Protocol(format!(
                "response for stage {:?} while we are in {:?}",
                resp.csg, self.stage
            )));
        }
        if resp.transit && resp.continue_ {
            return Err(LoginError::Protocol(
                "response with both T and C set".into(),
            ));
        }
        if self.outgoing.has_more() {
            // The target acknowledges a segment of our continued text.
            if resp.transit || resp.continue_ || !resp.data.is_empty() {
                return Err(LoginError::Protocol(
                    "target answered before our continued text was complete".into(),
                ));
            }
            return Ok(InitiatorStep::Send(self.next_segment()));
        }
        let Some(kvs) = self.incoming.push(&resp.data, resp.continue_)? else {
            // RFC 7143 §11.13: more text follows; ask for it with an empty request.
            let nsg = self.last_nsg;
            return Ok(InitiatorStep::Send(self.request(
                Bytes::new(),
                false,
                false,
                nsg,
            )));
        };
        if resp.transit {
            if !self.last_transit {
                return Err(LoginError::Protocol(
                    "target set T=1 although we did not ask to transit".into(),
                ));
            }
            if resp.nsg <= self.stage || resp.nsg > self.last_nsg || resp.nsg == Stage::Reserved {
                return Err(LoginError::Protocol(format!(
                    "target moved to stage {:?} from {:?} (we asked for {:?})",
                    resp.nsg, self.stage, self.last_nsg
                )));
            }
        }
        let processed = self.neg.process(&kvs)?;
        self.apply_declarations(&processed)?;
        match self.stage {
            Stage::SecurityNegotiation => self.security_stage(&resp, processed),
            Stage::LoginOperationalNegotiation => self.operational_stage(&resp, processed),
            s => Err(LoginError::Protocol(format!(
                "login response in stage {s:?}"
            ))),
        }
    }

    fn apply_declarations(&mut self, p: &Processed) -> Result<(), LoginError> {
        for (k, v) in &p.declarations {
            match k.as_str() {
                keys::TARGET_PORTAL_GROUP_TAG => {
                    self.target_portal_group_tag =
                        parse_number(v).and_then(|n| u16::try_from(n).ok());
                }
                keys::TARGET_ALIAS => self.target_alias = Some(v.clone()),
                _ => {}
            }
        }
        Ok(())
    }

    fn security_stage(
        &mut self,
        resp: &LoginResponse,
        p: Processed,
    ) -> Result<InitiatorStep, LoginError> {
        let mut out = p.answers;
        let mut first_step = false;
        if self.auth == AuthState::Offered && !self.neg.is_pending(keys::AUTH_METHOD) {
            let ours = self.authenticator.as_ref().map(|a| a.method().to_string());
            match self.neg.negotiated(keys::AUTH_METHOD) {
                Some(keys::NONE) => self.auth = AuthState::NotUsed,
                Some(m) if Some(m) == ours.as_deref() => {
                    self.auth = AuthState::Running;
                    first_step = true;
                }
                _ => {
                    return Err(AuthFailure::Protocol(
                        "target rejected every offered authentication method".into(),
                    )
                    .into())
                }
            }
        }
        if !p.auth.is_empty() && (self.auth != AuthState::Running || first_step) {
            return Err(LoginError::Protocol(
                "unexpected authentication keys".into(),
            ));
        }
        if self.auth == AuthState::Running {
            let Some(a) = self.authenticator.as_mut() else {
                return Err(LoginError::Protocol("no authenticator".into()));
            };
            match a.step(&p.auth) {
                AuthStep::Continue(k) => out.extend(k),
                AuthStep::Done(k) => {
                    out.extend(k);
                    self.auth = AuthState::Done;
                }
                AuthStep::Failed(f) => return Err(f.into()),
            }
        }
        if resp.transit {
            match self.auth {
                AuthState::NotUsed | AuthState::Done => {}
                // The target never answered AuthMethod: only fine if we offered None.
                AuthState::Offered if self.allow_no_auth => self.auth = AuthState::NotUsed,
                _ => {
                    return Err(AuthFailure::Protocol(
                        "target left the security stage before authentication completed".into(),
                    )
                    .into())
                }
            }
            self.stage = resp.nsg;
            if self.stage == Stage::FullFeaturePhase {
                return self.complete(resp);
            }
            out.extend(self.neg.operational_offers());
            return Ok(InitiatorStep::Send(self.send_text(
                out,
                true,
                Stage::FullFeaturePhase,
            )));
        }
        // Ready to transit once authentication is done or not used, and also
        // while it runs, from our first answer to the target on: the target
        // cannot transit before it is satisfied anyway, and targets such as
        // tgt expect T=1 on the PDU carrying CHAP_R (with mutual CHAP they
        // transit in the response carrying their own CHAP_R, which we verify
        // before accepting the transit).
        let ready = matches!(self.auth, AuthState::NotUsed | AuthState::Done)
            || (self.auth == AuthState::Offered && self.allow_no_auth)
            || (self.auth == AuthState::Running && !first_step);
        Ok(InitiatorStep::Send(self.send_text(
            out,
            ready,
            Stage::LoginOperationalNegotiation,
        )))
    }

    fn operational_stage(
        &mut self,
        resp: &LoginResponse,
        p: Processed,
    ) -> Result<InitiatorStep, LoginError> {
        if !p.auth.is_empty() {
            return Err(LoginError::Protocol(
                "authentication keys in the operational stage".into(),
            ));
        }
        if resp.transit {
            // Answers to offers the target made in its final response were
            // applied locally by the negotiator; nothing more can be sent.
            self.stage = resp.nsg;
            return self.complete(resp);
        }
        let mut out = p.answers;
        out.extend(self.neg.operational_offers());
        Ok(InitiatorStep::Send(self.send_text(
            out,
            true,
            Stage::FullFeaturePhase,
        )))
    }

    fn complete(&mut self, resp: &LoginResponse) -> Result<InitiatorStep, LoginError> {
        // RFC 7143 §11.13.4: "For a new session, the target MUST generate a
        // non-zero TSIH and ONLY return it in the Login Final-Response".
        if self.tsih == 0 && resp.tsih == 0 {
            return Err(LoginError::Protocol("final response without a TSIH".into()));
        }
        if self.tsih != 0 && resp.tsih != self.tsih {
            return Err(LoginError::Protocol(format!(
                "final response TSIH {} for our session {}",
                resp.tsih, self.tsih
            )));
        }
        let mut session = self.neg.session_params();
        session.initiator_name = self.initiator_name.clone();
        session.initiator_alias = self.initiator_alias.clone();
        session.target_name = self.target_name.clone();
        session.target_alias = self.target_alias.clone();
        session.target_portal_group_tag = self.target_portal_group_tag;
        let auth_method = match self.auth {
            AuthState::Done => self.authenticator.as_ref().map(|a| a.method().to_string()),
            _ => None,
        };
        Ok(InitiatorStep::Complete(LoginOutcome {
            isid: self.isid,
            tsih: resp.tsih,
            cid: self.cid,
            session,
            connection: self.neg.connection_params(),
            stat_sn: resp.stat_sn,
            exp_cmd_sn: resp.exp_cmd_sn,
            max_cmd_sn: resp.max_cmd_sn,
            cmd_sn: self.cmd_sn,
            auth_method,
        }))
    }
}
