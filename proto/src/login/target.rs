//! The target's login state machine (RFC 7143 §6.3, §11.12, §11.13),
//! sans-IO: each Login Request goes to [`TargetLogin::handle_request`]
//! together with the caller's [`TargetLoginPolicy`] (target names, ACLs,
//! authentication, session table); it returns the Login Response to send
//! and, at the end, the negotiated outcome or the failure.
//!
//! Transitions (CSG from the request):
//!
//! ```text
//! state        request                          action
//! ----------   ------------------------------   -----------------------------------------
//! first PDU    Version-min > 0                  Fail 0x0205 Unsupported version
//! first text   no InitiatorName                 Fail 0x0207 Missing parameter
//! first text   Normal without TargetName        Fail 0x0207 Missing parameter
//! first text   policy.admit() refuses           Fail with its status (0x0203, 0x0202...)
//! first text   TSIH != 0                        policy.join_session() or Fail (0x020a...)
//! any          C=1                              accumulate; empty response (T=0)
//! our text     (we sent C=1)                    next segment on each empty request
//! Security     AuthMethod offered               answer; auth required but not offered
//!                                                → Fail 0x0201 Authentication failure
//! Security     auth keys                        Authenticator::step: Continue → T=0,
//!                                                Done → may transit, Failed → Fail 0x0201
//! Security     T=1, auth done or not needed     T=1 NSG=Operational (or FFP if asked and
//!                                                nothing needs negotiating)
//! Security     T=1, auth required, no method    Fail 0x0201
//! Operational  (auth required, not done)        Fail 0x0201
//! Operational  keys                             answers + our own offers (first time)
//! Operational  T=1, no offer of ours pending    Complete: T=1 NSG=FFP, TSIH assigned
//! ```
//!
//! RFC 7143 rules implemented:
//! - §11.13: the target sets T=1 only when the initiator did, and its NSG
//!   is the initiator's or lower (Operational instead of FFP when we still
//!   have keys to negotiate).
//! - §11.13.3: T and C never both set.
//! - §13.9: "The iSCSI target returns this key (TargetPortalGroupTag) to the
//!   initiator in the Login Response PDU to the first Login Request PDU that
//!   has the C bit set to 0 when TargetName is given by the initiator."
//! - §11.13.4: "For a new session, the target MUST generate a non-zero TSIH
//!   and ONLY return it in the Login Final-Response".
//! - §11.13.x: StatSN: the first response carries the connection's initial
//!   StatSN, every later response the next one; ExpCmdSN is the login's
//!   CmdSN (the I bit is set, CmdSN does not advance).
//! - ISID, TSIH and CID may not change during the login.

use bytes::Bytes;

use super::auth::{AuthFailure, AuthStep, Authenticator};
use super::error::LoginError;
use super::initiator::ISCSI_VERSION;
use super::params::{
    OperationalConfig, SessionParams, SessionType, DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
};
use super::status::LoginStatus;
use super::LoginOutcome;
use crate::pdu::{Isid, LoginRequest, LoginResponse, Stage};
use crate::serial::{CmdSn, StatSn};
use crate::text::keys::{self, lookup};
use crate::text::negotiate::{Negotiator, Processed, Role};
use crate::text::{encode_kv, KeyValue, TextAccumulator, TextSender, DEFAULT_MAX_TEXT_LEN};

/// Target-wide login settings.
#[derive(Debug, Clone)]
pub struct TargetLoginConfig {
    /// TargetPortalGroupTag of the portal this connection arrived on.
    pub target_portal_group_tag: u16,
    /// The limits this target accepts (overridable per target by
    /// [`Admission::operational`]).
    pub operational: OperationalConfig,
    /// StatSN of the first Login Response (the caller's choice, e.g. random).
    pub initial_stat_sn: StatSn,
    /// Command window of a new session: MaxCmdSN = ExpCmdSN + window - 1.
    pub cmd_window: u32,
    /// Largest data segment we put in a Login Response.
    pub max_segment: usize,
    /// Bound on the total size of a (continued) Login Request text.
    pub max_text_len: usize,
    /// Bound on the number of Login Requests (a looping initiator).
    pub max_pdus: u32,
}

impl Default for TargetLoginConfig {
    fn default() -> Self {
        TargetLoginConfig {
            target_portal_group_tag: 1,
            operational: OperationalConfig::default(),
            initial_stat_sn: StatSn::new(0),
            cmd_window: 32,
            max_segment: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH as usize,
            max_text_len: DEFAULT_MAX_TEXT_LEN,
            max_pdus: 64,
        }
    }
}

/// Who is logging in to what, from the first Login Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginIdentity {
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// `None` only in a discovery session.
    pub target_name: Option<String>,
    pub session_type: SessionType,
    pub isid: Isid,
    /// 0: new session (or reinstatement of one with the same ISID).
    pub tsih: u16,
    pub cid: u16,
}

/// The policy's answer to [`TargetLoginPolicy::admit`].
#[derive(Default)]
pub struct Admission {
    /// `None`: no authentication (AuthMethod=None). `Some`: this method
    /// (e.g. CHAP) is required.
    pub authenticator: Option<Box<dyn Authenticator>>,
    /// TargetAlias to declare (RFC 7143 §13.6).
    pub target_alias: Option<String>,
    /// Per-target operational limits instead of [`TargetLoginConfig::operational`].
    pub operational: Option<OperationalConfig>,
}

impl core::fmt::Debug for Admission {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Admission")
            .field(
                "auth",
                &self.authenticator.as_ref().map(|a| a.method().to_string()),
            )
            .field("target_alias", &self.target_alias)
            .finish_non_exhaustive()
    }
}

/// An existing session a connection joins (TSIH != 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionJoin {
    /// The session's parameters (from its leading connection).
    pub session: SessionParams,
    /// The session's current command window.
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
}

/// Decisions the login state machine delegates to the target shell.
pub trait TargetLoginPolicy {
    /// The first complete Login Request arrived: does the target exist
    /// (else [`LoginStatus::NOT_FOUND`]), may this initiator use it (else
    /// [`LoginStatus::AUTHORIZATION_FAILURE`]), is this session type served
    /// (else [`LoginStatus::SESSION_TYPE_NOT_SUPPORTED`]), and which
    /// authentication is required.
    fn admit(&mut self, id: &LoginIdentity) -> Result<Admission, LoginStatus>;

    /// `id.tsih != 0`: the connection joins that session. Refuse with
    /// [`LoginStatus::SESSION_DOES_NOT_EXIST`],
    /// [`LoginStatus::TOO_MANY_CONNECTIONS`] or
    /// [`LoginStatus::CANT_INCLUDE_IN_SESSION`].
    fn join_session(&mut self, id: &LoginIdentity) -> Result<SessionJoin, LoginStatus>;

    /// A new session (TSIH 0) is about to enter the full-feature phase:
    /// return its non-zero TSIH (and reinstate any old session with the
    /// same initiator name and ISID).
    fn new_session(
        &mut self,
        id: &LoginIdentity,
        session: &SessionParams,
    ) -> Result<u16, LoginStatus>;
}

/// What to do with a Login Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetStep {
    /// Send this response and wait for the next request.
    Send(LoginResponse),
    /// Send this final response; the connection is in the full-feature phase.
    Complete(LoginResponse, LoginOutcome),
    /// Send this error response and close the connection.
    Fail(LoginResponse, LoginError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthState {
    /// Admission had no authenticator.
    NotRequired,
    /// Required; AuthMethod not agreed yet.
    Required,
    /// AuthMethod agreed; the authenticator runs on the next requests.
    Running,
    /// The authenticator is satisfied.
    Done,
}

/// The target side of one connection's login.
pub struct TargetLogin {
    cfg: TargetLoginConfig,
    neg: Option<Negotiator>,
    identity: Option<LoginIdentity>,
    authenticator: Option<Box<dyn Authenticator>>,
    auth: AuthState,
    target_alias: Option<String>,
    join: Option<SessionJoin>,
    stage: Stage,
    isid: Isid,
    tsih: u16,
    cid: u16,
    itt: u32,
    started: bool,
    stat_sn: StatSn,
    exp_cmd_sn: CmdSn,
    max_cmd_sn: CmdSn,
    incoming: TextAccumulator,
    outgoing: TextSender,
    /// T, NSG and outcome for the last segment of the text being sent.
    out_transit: bool,
    out_nsg: Stage,
    out_outcome: Option<LoginOutcome>,
    unsolicited_done: bool,
    pdus: u32,
    finished: bool,
}

impl TargetLogin {
    /// A login on a newly accepted connection.
    pub fn new(cfg: TargetLoginConfig) -> Self {
        TargetLogin {
            stat_sn: cfg.initial_stat_sn,
            incoming: TextAccumulator::new(cfg.max_text_len),
            cfg,
            neg: None,
            identity: None,
            authenticator: None,
            auth: AuthState::NotRequired,
            target_alias: None,
            join: None,
            stage: Stage::SecurityNegotiation,
            isid: Isid::default(),
            tsih: 0,
            cid: 0,
            itt: 0,
            started: false,
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            outgoing: TextSender::default(),
            out_transit: false,
            out_nsg: Stage::SecurityNegotiation,
            out_outcome: None,
            unsolicited_done: false,
            pdus: 0,
            finished: false,
        }
    }

    /// The identity from the first request, once known.
    pub fn identity(&self) -> Option<&LoginIdentity> {
        self.identity.as_ref()
    }

    /// The current stage (CSG).
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether the login ended (completed or failed).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Feed one Login Request.
    pub fn handle_request(
        &mut self,
        req: LoginRequest,
        policy: &mut dyn TargetLoginPolicy,
    ) -> TargetStep {
        if self.finished {
            let e = LoginError::Protocol("Login Request after the login ended".into());
            return TargetStep::Fail(self.error_response(e.login_status()), e);
        }
        match self.handle_inner(req, policy) {
            Ok(step) => {
                if matches!(step, TargetStep::Complete(..)) {
                    self.finished = true;
                }
                step
            }
            Err(e) => {
                self.finished = true;
                TargetStep::Fail(self.error_response(e.login_status()), e)
            }
        }
    }

    /// Refuse a PDU arriving during login that is not a Login Request
    /// (`decoded`: RFC 7143 §11.13.5 0x020b "Invalid request type during
    /// login: an initiator has attempted a non-login request during
    /// login") or that could not be decoded at all (0x0200 "initiator
    /// error"). `itt` is the offending PDU's Initiator Task Tag when its
    /// header arrived. Send the response, then close the connection.
    pub fn refuse_pdu(&mut self, itt: Option<u32>, decoded: bool) -> LoginResponse {
        self.finished = true;
        if let Some(itt) = itt {
            self.itt = itt;
        }
        self.error_response(if decoded {
            LoginStatus::INVALID_DURING_LOGIN
        } else {
            LoginStatus::INITIATOR_ERROR
        })
    }

    /// A response with the next StatSN.
    fn response(
        &mut self,
        data: Bytes,
        continue_: bool,
        transit: bool,
        nsg: Stage,
        tsih: u16,
    ) -> LoginResponse {
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        LoginResponse {
            transit,
            continue_,
            csg: self.stage,
            nsg,
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid: self.isid,
            tsih,
            itt: self.itt,
            stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            status_class: 0,
            status_detail: 0,
            data,
        }
    }

    fn error_response(&mut self, status: LoginStatus) -> LoginResponse {
        let (stage, tsih) = (self.stage, self.tsih);
        let mut r = self.response(Bytes::new(), false, false, stage, tsih);
        r.status_class = status.class;
        r.status_detail = status.detail;
        r
    }

    fn denied(status: LoginStatus) -> LoginError {
        LoginError::Denied {
            status,
            reason: status.message().to_string(),
        }
    }

    fn handle_inner(
        &mut self,
        req: LoginRequest,
        policy: &mut dyn TargetLoginPolicy,
    ) -> Result<TargetStep, LoginError> {
        self.pdus += 1;
        if self.pdus > self.cfg.max_pdus {
            return Err(LoginError::TooManyRoundTrips(self.cfg.max_pdus));
        }
        self.itt = req.itt;
        if !self.started {
            self.started = true;
            self.isid = req.isid;
            self.tsih = req.tsih;
            self.cid = req.cid;
            self.stage = req.csg;
            self.exp_cmd_sn = req.cmd_sn;
            self.max_cmd_sn = req.cmd_sn.wrapping_add(self.cfg.cmd_window.max(1) - 1);
            // RFC 7143 §11.12.4: Version-min is the lowest version the
            // initiator supports; ours is 0x00.
            if req.version_min > ISCSI_VERSION {
                return Err(Self::denied(LoginStatus::UNSUPPORTED_VERSION));
            }
            if !matches!(
                req.csg,
                Stage::SecurityNegotiation | Stage::LoginOperationalNegotiation
            ) {
                return Err(LoginError::Protocol(format!(
                    "login starts in stage {:?}",
                    req.csg
                )));
            }
        } else {
            if req.isid != self.isid || req.tsih != self.tsih || req.cid != self.cid {
                return Err(LoginError::Protocol(
                    "ISID, TSIH or CID changed during login".into(),
                ));
            }
            if req.csg != self.stage {
                return Err(LoginError::Protocol(format!(
                    "request for stage {:?} while in {:?}",
                    req.csg, self.stage
                )));
            }
        }
        if req.transit && req.continue_ {
            return Err(LoginError::Protocol("request with both T and C set".into()));
        }
        if req.transit && (req.nsg <= req.csg || req.nsg == Stage::Reserved) {
            return Err(LoginError::Protocol(format!(
                "transit from {:?} to {:?}",
                req.csg, req.nsg
            )));
        }
        if self.outgoing.has_more() {
            if req.continue_ || req.transit || !req.data.is_empty() {
                return Err(LoginError::Protocol(
                    "initiator sent text before our continued response was complete".into(),
                ));
            }
            return Ok(self.next_segment());
        }
        let Some(kvs) = self.incoming.push(&req.data, req.continue_)? else {
            // More text follows: acknowledge with an empty response.
            let (stage, tsih) = (self.stage, self.tsih);
            return Ok(TargetStep::Send(self.response(
                Bytes::new(),
                false,
                false,
                stage,
                tsih,
            )));
        };
        let mut out = Vec::new();
        if self.identity.is_none() {
            self.first_text(&kvs, policy, &mut out)?;
        }
        let Some(neg) = self.neg.as_mut() else {
            return Err(LoginError::Protocol("no negotiation state".into()));
        };
        let processed = neg.process(&kvs)?;
        let has_auth_method = kvs.iter().any(|(k, _)| k == keys::AUTH_METHOD);
        out.splice(0..0, processed.answers.iter().cloned());
        match self.stage {
            Stage::SecurityNegotiation => {
                self.security_stage(&req, processed, has_auth_method, out, policy)
            }
            Stage::LoginOperationalNegotiation => {
                self.operational_stage(&req, processed, has_auth_method, out, policy)
            }
            s => Err(LoginError::Protocol(format!(
                "login request in stage {s:?}"
            ))),
        }
    }

    /// The first complete text: identity, admission, session join.
    fn first_text(
        &mut self,
        kvs: &[KeyValue],
        policy: &mut dyn TargetLoginPolicy,
        out: &mut Vec<KeyValue>,
    ) -> Result<(), LoginError> {
        let get = |k: &str| kvs.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
        let initiator_name = get(keys::INITIATOR_NAME)
            .filter(|v| !v.is_empty())
            .ok_or(LoginError::MissingParameter(keys::INITIATOR_NAME))?;
        let session_type = match get(keys::SESSION_TYPE) {
            None => SessionType::Normal,
            Some(v) => SessionType::parse(&v)
                .ok_or_else(|| LoginError::Protocol(format!("invalid SessionType={v}")))?,
        };
        let target_name = get(keys::TARGET_NAME);
        // RFC 7143 §13.4: TargetName is required except in a discovery session.
        if session_type == SessionType::Normal && target_name.is_none() {
            return Err(LoginError::MissingParameter(keys::TARGET_NAME));
        }
        let id = LoginIdentity {
            initiator_name,
            initiator_alias: get(keys::INITIATOR_ALIAS),
            target_name,
            session_type,
            isid: self.isid,
            tsih: self.tsih,
            cid: self.cid,
        };
        let admission = policy.admit(&id).map_err(Self::denied)?;
        if id.tsih != 0 {
            let join = policy.join_session(&id).map_err(Self::denied)?;
            self.exp_cmd_sn = join.exp_cmd_sn;
            self.max_cmd_sn = join.max_cmd_sn;
            self.join = Some(join);
        }
        let operational = admission
            .operational
            .unwrap_or_else(|| self.cfg.operational.clone());
        let mut neg = Negotiator::new(Role::Target, operational, session_type, id.tsih == 0);
        self.auth = match &admission.authenticator {
            Some(a) => {
                neg.set_auth_methods(vec![a.method().to_string()]);
                AuthState::Required
            }
            None => AuthState::NotRequired,
        };
        self.authenticator = admission.authenticator;
        self.target_alias = admission.target_alias;
        if id.target_name.is_some() {
            if let Some(def) = lookup(keys::TARGET_PORTAL_GROUP_TAG) {
                out.push(neg.offer(def, self.cfg.target_portal_group_tag.to_string()));
            }
            if let (Some(a), Some(def)) = (&self.target_alias, lookup(keys::TARGET_ALIAS)) {
                out.push(neg.offer(def, a.clone()));
            }
        }
        self.neg = Some(neg);
        self.identity = Some(id);
        Ok(())
    }

    fn security_stage(
        &mut self,
        req: &LoginRequest,
        p: Processed,
        has_auth_method: bool,
        mut out: Vec<KeyValue>,
        policy: &mut dyn TargetLoginPolicy,
    ) -> Result<TargetStep, LoginError> {
        let chosen = self
            .neg
            .as_ref()
            .and_then(|n| n.negotiated(keys::AUTH_METHOD))
            .map(str::to_string);
        if has_auth_method {
            let required = self.authenticator.as_ref().map(|a| a.method().to_string());
            match (self.auth, chosen.as_deref(), required.as_deref()) {
                (AuthState::Required, Some(c), Some(r)) if c == r => self.auth = AuthState::Running,
                (AuthState::Required, _, Some(r)) => {
                    return Err(AuthFailure::AuthenticationFailed(format!(
                        "authentication with {r} is required; the initiator did not offer it"
                    ))
                    .into())
                }
                (AuthState::NotRequired, Some(keys::NONE), _) => {}
                _ => {
                    return Err(AuthFailure::AuthenticationFailed(
                        "no acceptable authentication method offered".into(),
                    )
                    .into())
                }
            }
            if !p.auth.is_empty() {
                return Err(LoginError::Protocol(
                    "authentication keys before AuthMethod was agreed".into(),
                ));
            }
        } else if self.auth == AuthState::Running {
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
        } else if !p.auth.is_empty() {
            return Err(LoginError::Protocol(
                "unexpected authentication keys".into(),
            ));
        }
        if !req.transit {
            return Ok(self.send_text(out, false, Stage::SecurityNegotiation, None));
        }
        match self.auth {
            AuthState::Required => {
                return Err(AuthFailure::AuthenticationFailed(
                    "authentication is required; the initiator skipped it".into(),
                )
                .into())
            }
            // Not finished: stay in the security stage.
            AuthState::Running => {
                return Ok(self.send_text(out, false, Stage::SecurityNegotiation, None))
            }
            AuthState::NotRequired | AuthState::Done => {}
        }
        let needs_operational = self.neg.as_ref().is_some_and(Negotiator::needs_offers);
        if req.nsg == Stage::FullFeaturePhase && !needs_operational {
            return self.finish(out, policy);
        }
        Ok(self.send_text(out, true, Stage::LoginOperationalNegotiation, None))
    }

    fn operational_stage(
        &mut self,
        req: &LoginRequest,
        p: Processed,
        has_auth_method: bool,
        mut out: Vec<KeyValue>,
        policy: &mut dyn TargetLoginPolicy,
    ) -> Result<TargetStep, LoginError> {
        if has_auth_method || !p.auth.is_empty() {
            return Err(LoginError::Protocol(
                "security keys in the operational stage".into(),
            ));
        }
        if matches!(self.auth, AuthState::Required | AuthState::Running) {
            return Err(AuthFailure::AuthenticationFailed(
                "authentication is required; the initiator skipped the security stage".into(),
            )
            .into());
        }
        let Some(neg) = self.neg.as_mut() else {
            return Err(LoginError::Protocol("no negotiation state".into()));
        };
        if !self.unsolicited_done {
            self.unsolicited_done = true;
            out.extend(neg.unsolicited_offers());
        }
        if req.transit && !neg.has_pending() {
            return self.finish(out, policy);
        }
        Ok(self.send_text(out, false, Stage::LoginOperationalNegotiation, None))
    }

    /// Transit to the full-feature phase.
    fn finish(
        &mut self,
        mut out: Vec<KeyValue>,
        policy: &mut dyn TargetLoginPolicy,
    ) -> Result<TargetStep, LoginError> {
        let (Some(neg), Some(id)) = (self.neg.as_mut(), self.identity.as_ref()) else {
            return Err(LoginError::Protocol("no negotiation state".into()));
        };
        if let Some(kv) = neg.declare_mrdsl() {
            out.push(kv);
        }
        let connection = neg.connection_params();
        let (session, tsih) = match &self.join {
            Some(j) => (j.session.clone(), id.tsih),
            None => {
                let mut s = neg.session_params();
                s.initiator_name = id.initiator_name.clone();
                s.initiator_alias = id.initiator_alias.clone();
                s.target_name = id.target_name.clone();
                // Declared only to an initiator that named the target.
                s.target_alias = id.target_name.as_ref().and(self.target_alias.clone());
                s.target_portal_group_tag = id
                    .target_name
                    .as_ref()
                    .map(|_| self.cfg.target_portal_group_tag);
                let tsih = policy.new_session(id, &s).map_err(Self::denied)?;
                if tsih == 0 {
                    return Err(LoginError::Denied {
                        status: LoginStatus::TARGET_ERROR,
                        reason: "policy assigned TSIH 0".into(),
                    });
                }
                (s, tsih)
            }
        };
        let auth_method = match self.auth {
            AuthState::Done => self.authenticator.as_ref().map(|a| a.method().to_string()),
            _ => None,
        };
        let outcome = LoginOutcome {
            isid: self.isid,
            tsih,
            cid: self.cid,
            session,
            connection,
            stat_sn: StatSn::new(0), // set when the final response is built
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
            cmd_sn: self.exp_cmd_sn,
            auth_method,
        };
        Ok(self.send_text(out, true, Stage::FullFeaturePhase, Some(outcome)))
    }

    /// Send `kvs` (cut for C-bit continuation if needed); the last segment
    /// carries T=`transit`, `nsg`, and completes the login with `outcome`.
    fn send_text(
        &mut self,
        kvs: Vec<KeyValue>,
        transit: bool,
        nsg: Stage,
        outcome: Option<LoginOutcome>,
    ) -> TargetStep {
        self.outgoing = TextSender::new(encode_kv(&kvs), self.cfg.max_segment);
        self.out_transit = transit;
        self.out_nsg = nsg;
        self.out_outcome = outcome;
        self.next_segment()
    }

    fn next_segment(&mut self) -> TargetStep {
        let (seg, more) = self.outgoing.next_segment().unwrap_or_default();
        let tsih = self.tsih;
        if more {
            let stage = self.stage;
            return TargetStep::Send(self.response(seg, true, false, stage, tsih));
        }
        let (transit, nsg) = (self.out_transit, self.out_nsg);
        match self.out_outcome.take() {
            Some(mut outcome) => {
                let r = self.response(seg, false, transit, nsg, outcome.tsih);
                outcome.stat_sn = r.stat_sn;
                self.stage = Stage::FullFeaturePhase;
                TargetStep::Complete(r, outcome)
            }
            None => {
                let r = self.response(seg, false, transit, nsg, tsih);
                if transit {
                    self.stage = nsg;
                }
                TargetStep::Send(r)
            }
        }
    }
}
