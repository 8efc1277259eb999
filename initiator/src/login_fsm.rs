//! Initiator side of the login phase (RFC 7143 §6.1-§6.3, §11.12-§11.13),
//! sans-IO: feed Login Responses in, get Login Requests out.
//!
//! Local adapter: `proto` is to grow its own initiator login state machine;
//! until it lands this one, built on `proto::text::negotiate::Negotiator`
//! and `proto::login::auth::Authenticator`, drives the stages:
//!
//! ```text
//! security (CSG=0): names + AuthMethod  ->  [CHAP exchange]  -> T=1, NSG=1
//! operational (CSG=1): operational offers, answers           -> T=1, NSG=3
//! ```
//!
//! A target may jump straight from security to full feature (NSG=3) when
//! nothing is left to negotiate; that is accepted.

use bytes::Bytes;
use proto::login::auth::{AuthFailure, AuthStep, Authenticator};
use proto::login::{ConnectionParams, OperationalConfig, SessionParams, SessionType};
use proto::pdu::{Isid, LoginRequest, LoginResponse, Stage};
use proto::text::keys::{self, lookup};
use proto::text::negotiate::{Negotiator, Role};
use proto::text::{encode_kv, parse_kv, KeyValue, TextAccumulator};

/// Configuration of one login.
pub struct InitiatorLoginConfig {
    pub initiator_name: String,
    pub target_name: Option<String>,
    pub session_type: SessionType,
    pub isid: Isid,
    pub tsih: u16,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub operational: OperationalConfig,
    pub authenticator: Option<Box<dyn Authenticator>>,
}

/// What to do after a Login Response.
#[derive(Debug)]
pub enum InitiatorStep {
    Send(LoginRequest),
    Complete(LoginOutcome),
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub tsih: u16,
    pub session: SessionParams,
    pub connection: ConnectionParams,
}

/// Login failures detected on our side.
#[derive(Debug, thiserror::Error)]
pub enum LoginFsmError {
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("login protocol violation: {0}")]
    Protocol(String),
}

/// The login state machine.
pub struct InitiatorLogin {
    cfg_names: (String, Option<String>, SessionType),
    isid: Isid,
    tsih: u16,
    cid: u16,
    cmd_sn: u32,
    exp_stat_sn: u32,
    stage: Stage,
    neg: Negotiator,
    auth: Option<Box<dyn Authenticator>>,
    auth_done: bool,
    sent_response: bool,
    acc: TextAccumulator,
    declarations: Vec<KeyValue>,
    rounds: u32,
}

const MAX_ROUNDS: u32 = 32;

impl InitiatorLogin {
    pub fn new(cfg: InitiatorLoginConfig) -> Self {
        let leading = cfg.tsih == 0;
        let mut neg = Negotiator::new(Role::Initiator, cfg.operational, cfg.session_type, leading);
        let methods = match &cfg.authenticator {
            Some(a) => vec![a.method().to_string()],
            None => vec![keys::NONE.to_string()],
        };
        neg.set_auth_methods(methods);
        InitiatorLogin {
            cfg_names: (cfg.initiator_name, cfg.target_name, cfg.session_type),
            isid: cfg.isid,
            tsih: cfg.tsih,
            cid: cfg.cid,
            cmd_sn: cfg.cmd_sn,
            exp_stat_sn: cfg.exp_stat_sn,
            stage: Stage::SecurityNegotiation,
            neg,
            auth: cfg.authenticator,
            auth_done: false,
            sent_response: false,
            acc: TextAccumulator::new(64 * 1024),
            declarations: Vec::new(),
            rounds: 0,
        }
    }

    fn request(&self, transit: bool, nsg: Stage, kv: &[KeyValue]) -> LoginRequest {
        LoginRequest {
            transit,
            continue_: false,
            csg: self.stage,
            nsg: if transit { nsg } else { Stage::SecurityNegotiation },
            version_max: 0,
            version_min: 0,
            isid: self.isid,
            tsih: self.tsih,
            itt: 0,
            cid: self.cid,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            data: if kv.is_empty() { Bytes::new() } else { encode_kv(kv) },
        }
    }

    /// The first Login Request: security stage, names and AuthMethod.
    pub fn start(&mut self) -> LoginRequest {
        let (iname, tname, stype) = self.cfg_names.clone();
        let mut kv: Vec<KeyValue> = vec![(keys::INITIATOR_NAME.into(), iname)];
        if stype == SessionType::Discovery {
            kv.push((keys::SESSION_TYPE.into(), "Discovery".into()));
        } else {
            kv.push((keys::SESSION_TYPE.into(), "Normal".into()));
            if let Some(t) = tname {
                kv.push((keys::TARGET_NAME.into(), t));
            }
        }
        if let Some(def) = lookup(keys::AUTH_METHOD) {
            let v = self.auth.as_ref().map(|a| a.method().to_string()).unwrap_or_else(|| keys::NONE.to_string());
            kv.push(self.neg.offer(def, v));
        }
        // Without authentication we are ready to leave the security stage.
        let transit = self.auth.is_none();
        self.request(transit, Stage::LoginOperationalNegotiation, &kv)
    }

    fn operational_request(&mut self, mut kv: Vec<KeyValue>) -> LoginRequest {
        self.stage = Stage::LoginOperationalNegotiation;
        self.neg.begin_exchange();
        kv.extend(self.neg.operational_offers());
        self.request(true, Stage::FullFeaturePhase, &kv)
    }

    fn complete(&self, resp: &LoginResponse) -> LoginOutcome {
        let mut session = self.neg.session_params();
        session.initiator_name = self.cfg_names.0.clone();
        session.target_name = self.cfg_names.1.clone();
        session.session_type = self.cfg_names.2;
        for (k, v) in &self.declarations {
            match k.as_str() {
                keys::TARGET_ALIAS => session.target_alias = Some(v.clone()),
                keys::TARGET_PORTAL_GROUP_TAG => session.target_portal_group_tag = v.parse().ok(),
                _ => {}
            }
        }
        LoginOutcome { tsih: resp.tsih, session, connection: self.neg.connection_params() }
    }

    /// Consume a Login Response with status 0 (the caller handles
    /// redirection and refusal from the status class).
    pub fn handle_response(&mut self, resp: LoginResponse) -> Result<InitiatorStep, LoginFsmError> {
        self.rounds += 1;
        if self.rounds > MAX_ROUNDS {
            return Err(LoginFsmError::Protocol(format!("login did not finish in {MAX_ROUNDS} round trips")));
        }
        if resp.isid != self.isid {
            return Err(LoginFsmError::Protocol("Login Response for another ISID".into()));
        }
        self.exp_stat_sn = resp.stat_sn.wrapping_add(1);
        // RFC 7143 §11.13.3: C=1, more text follows: ask for it.
        let Some(received) = self
            .acc
            .push(&resp.data, resp.continue_)
            .map_err(|e| LoginFsmError::Protocol(format!("login text: {e}")))?
        else {
            return Ok(InitiatorStep::Send(self.request(false, Stage::SecurityNegotiation, &[])));
        };
        let _ = parse_kv; // (kept for symmetry with the text layer)
        if resp.csg != self.stage {
            return Err(LoginFsmError::Protocol(format!(
                "target answered in stage {:?} while we are in {:?}",
                resp.csg, self.stage
            )));
        }
        let p = self.neg.process(&received).map_err(|e| LoginFsmError::Negotiation(e.to_string()))?;
        self.declarations.extend(p.declarations.iter().cloned());
        let transit_to = resp.transit.then_some(resp.nsg);
        match self.stage {
            Stage::SecurityNegotiation => {
                let method = self.neg.negotiated(keys::AUTH_METHOD).map(str::to_string);
                let chap_chosen = method.as_deref().is_some_and(|m| m != keys::NONE);
                if let Some(auth) = self.auth.as_mut().filter(|_| chap_chosen || !p.auth.is_empty()) {
                    if !self.auth_done {
                        match auth.step(&p.auth) {
                            AuthStep::Continue(kv) => {
                                let has_response = kv.iter().any(|(k, _)| k == "CHAP_R");
                                self.sent_response |= has_response;
                                return Ok(InitiatorStep::Send(self.request(
                                    has_response,
                                    Stage::LoginOperationalNegotiation,
                                    &kv,
                                )));
                            }
                            AuthStep::Done(kv) => {
                                self.auth_done = true;
                                if !kv.is_empty() || transit_to.is_none() {
                                    return Ok(InitiatorStep::Send(self.request(
                                        true,
                                        Stage::LoginOperationalNegotiation,
                                        &kv,
                                    )));
                                }
                            }
                            AuthStep::Failed(AuthFailure::AuthenticationFailed(m))
                            | AuthStep::Failed(AuthFailure::Protocol(m)) => return Err(LoginFsmError::Auth(m)),
                        }
                    }
                } else if self.auth.is_some() && method.is_some() && !chap_chosen {
                    return Err(LoginFsmError::Auth("the target did not accept CHAP".into()));
                }
                match transit_to {
                    Some(Stage::LoginOperationalNegotiation) => Ok(InitiatorStep::Send(self.operational_request(p.answers))),
                    Some(Stage::FullFeaturePhase) => {
                        if self.auth.is_some() && !self.auth_done {
                            return Err(LoginFsmError::Auth("target skipped authentication".into()));
                        }
                        Ok(InitiatorStep::Complete(self.complete(&resp)))
                    }
                    Some(other) => Err(LoginFsmError::Protocol(format!("bad NSG {other:?}"))),
                    None => {
                        let ready = self.auth.is_none() || self.auth_done;
                        Ok(InitiatorStep::Send(self.request(ready, Stage::LoginOperationalNegotiation, &p.answers)))
                    }
                }
            }
            Stage::LoginOperationalNegotiation => match transit_to {
                Some(Stage::FullFeaturePhase) => Ok(InitiatorStep::Complete(self.complete(&resp))),
                Some(other) => Err(LoginFsmError::Protocol(format!("bad NSG {other:?} in operational stage"))),
                None => {
                    let mut kv = p.answers;
                    kv.extend(self.neg.unsolicited_offers());
                    Ok(InitiatorStep::Send(self.request(true, Stage::FullFeaturePhase, &kv)))
                }
            },
            other => Err(LoginFsmError::Protocol(format!("login in stage {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(csg: Stage, transit: bool, nsg: Stage, isid: Isid, kv: &[(&str, &str)]) -> LoginResponse {
        let pairs: Vec<(String, String)> = kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LoginResponse {
            transit,
            continue_: false,
            csg,
            nsg,
            version_max: 0,
            version_active: 0,
            isid,
            tsih: 7,
            itt: 0,
            stat_sn: 100,
            exp_cmd_sn: 1,
            max_cmd_sn: 32,
            status_class: 0,
            status_detail: 0,
            data: encode_kv(&pairs),
        }
    }

    fn cfg(isid: Isid) -> InitiatorLoginConfig {
        InitiatorLoginConfig {
            initiator_name: "iqn.2026-01.x:i".into(),
            target_name: Some("iqn.2026-01.x:t".into()),
            session_type: SessionType::Normal,
            isid,
            tsih: 0,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
            operational: OperationalConfig::default(),
            authenticator: None,
        }
    }

    #[test]
    fn no_auth_login_goes_through_operational_stage() {
        let isid = Isid([0x80, 1, 2, 3, 4, 5]);
        let mut l = InitiatorLogin::new(cfg(isid));
        let r0 = l.start();
        assert!(r0.transit);
        assert_eq!(r0.csg, Stage::SecurityNegotiation);
        let kv = parse_kv(&r0.data).unwrap();
        assert!(kv.contains(&("AuthMethod".into(), "None".into())));
        assert!(kv.contains(&("TargetName".into(), "iqn.2026-01.x:t".into())));
        let step = l
            .handle_response(resp(
                Stage::SecurityNegotiation,
                true,
                Stage::LoginOperationalNegotiation,
                isid,
                &[("AuthMethod", "None"), ("TargetPortalGroupTag", "1")],
            ))
            .unwrap();
        let InitiatorStep::Send(r1) = step else { panic!("expected a request") };
        assert_eq!(r1.csg, Stage::LoginOperationalNegotiation);
        assert_eq!(r1.nsg, Stage::FullFeaturePhase);
        assert_eq!(r1.exp_stat_sn, 101);
        let offers = parse_kv(&r1.data).unwrap();
        assert!(offers.iter().any(|(k, _)| k == "MaxBurstLength"));
        let step = l
            .handle_response(resp(
                Stage::LoginOperationalNegotiation,
                true,
                Stage::FullFeaturePhase,
                isid,
                &[
                    ("HeaderDigest", "None"),
                    ("DataDigest", "None"),
                    ("MaxConnections", "1"),
                    ("InitialR2T", "Yes"),
                    ("ImmediateData", "Yes"),
                    ("MaxBurstLength", "262144"),
                    ("FirstBurstLength", "65536"),
                    ("MaxRecvDataSegmentLength", "8192"),
                ],
            ))
            .unwrap();
        let InitiatorStep::Complete(o) = step else { panic!("expected completion") };
        assert_eq!(o.tsih, 7);
        assert!(o.session.initial_r2t);
        assert_eq!(o.session.max_burst_length, 262144);
        assert_eq!(o.connection.max_send_data_segment_length, 8192);
        assert_eq!(o.session.target_portal_group_tag, Some(1));
    }

    #[test]
    fn wrong_isid_is_a_protocol_error() {
        let isid = Isid([0x80, 1, 2, 3, 4, 5]);
        let mut l = InitiatorLogin::new(cfg(isid));
        l.start();
        let r = resp(Stage::SecurityNegotiation, true, Stage::LoginOperationalNegotiation, Isid([0; 6]), &[]);
        assert!(matches!(l.handle_response(r), Err(LoginFsmError::Protocol(_))));
    }
}
