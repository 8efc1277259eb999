//! In-memory initiator ↔ target logins (RFC 7143 §6.3, §11.12, §11.13),
//! driven PDU by PDU through the real PDU encoder/decoder.

use std::collections::BTreeMap;

use bytes::Bytes;
use proto::login::auth::{AuthFailure, AuthStep, Authenticator, KeyValue};
use proto::login::{
    Admission, Digest, InitiatorLogin, InitiatorLoginConfig, InitiatorStep, LoginError,
    LoginIdentity, LoginOutcome, LoginStatus, OperationalConfig, SessionJoin, SessionParams,
    SessionType, TargetLogin, TargetLoginConfig, TargetLoginPolicy, TargetStep,
};
use proto::pdu::{DigestConfig, Isid, LoginRequest, LoginResponse, Pdu, Stage};
use proto::serial::{CmdSn, StatSn};
use proto::text::discovery::{encode_send_targets, parse_send_targets, DiscoveredTarget};
use proto::text::{encode_kv, parse_kv};

const INITIATOR: &str = "iqn.2024-01.org.example:initiator";
const TARGET: &str = "iqn.2024-01.org.example:disk1";
const ISID: Isid = Isid([0x80, 0, 0, 1, 0, 0]);

// ---------------------------------------------------------------- toy auth

/// A toy challenge/response over the CHAP_* keys (not real CHAP: the
/// `chap` crate is tested elsewhere): the initiator asks with CHAP_A, the
/// target sends CHAP_C, the initiator proves with CHAP_N/CHAP_R = secret+challenge.
struct ToyInitiatorAuth {
    user: String,
    secret: String,
    state: u8,
    /// Mutual: also challenge the target, expect `target_secret` + our challenge.
    target_secret: Option<String>,
}

impl Authenticator for ToyInitiatorAuth {
    fn method(&self) -> &str {
        "CHAP"
    }
    fn step(&mut self, received: &[KeyValue]) -> AuthStep {
        self.state += 1;
        match self.state {
            1 if received.is_empty() => AuthStep::Continue(vec![kv("CHAP_A", "5")]),
            2 => match received.iter().find(|(k, _)| k == "CHAP_C") {
                Some((_, c)) => {
                    let mut out = vec![
                        kv("CHAP_N", &self.user),
                        kv("CHAP_R", &format!("{}{}", self.secret, c)),
                    ];
                    if self.target_secret.is_none() {
                        return AuthStep::Done(out);
                    }
                    out.push(kv("CHAP_I", "9"));
                    out.push(kv("CHAP_C", "0xfeed"));
                    AuthStep::Continue(out)
                }
                None => AuthStep::Failed(AuthFailure::Protocol("no CHAP_C".into())),
            },
            3 => {
                let expected = format!(
                    "{}0xfeed",
                    self.target_secret.as_deref().unwrap_or_default()
                );
                if received
                    .iter()
                    .any(|(k, v)| k == "CHAP_R" && *v == expected)
                {
                    AuthStep::Done(vec![])
                } else {
                    AuthStep::Failed(AuthFailure::AuthenticationFailed("target proof".into()))
                }
            }
            _ => AuthStep::Failed(AuthFailure::Protocol("unexpected step".into())),
        }
    }
}

struct ToyTargetAuth {
    user: String,
    secret: String,
    target_secret: String,
    challenge: String,
    state: u8,
}

impl Authenticator for ToyTargetAuth {
    fn method(&self) -> &str {
        "CHAP"
    }
    fn step(&mut self, received: &[KeyValue]) -> AuthStep {
        self.state += 1;
        let get = |k: &str| {
            received
                .iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.clone())
        };
        match self.state {
            1 if get("CHAP_A").is_some() => AuthStep::Continue(vec![
                kv("CHAP_A", "5"),
                kv("CHAP_I", "1"),
                kv("CHAP_C", &self.challenge),
            ]),
            2 => {
                let expected = format!("{}{}", self.secret, self.challenge);
                if get("CHAP_N").as_deref() == Some(self.user.as_str())
                    && get("CHAP_R") == Some(expected)
                {
                    match get("CHAP_C") {
                        // Mutual: prove ourselves with the target secret.
                        Some(c) => AuthStep::Done(vec![
                            kv("CHAP_N", "target"),
                            kv("CHAP_R", &format!("{}{}", self.target_secret, c)),
                        ]),
                        None => AuthStep::Done(vec![]),
                    }
                } else {
                    AuthStep::Failed(AuthFailure::AuthenticationFailed("bad response".into()))
                }
            }
            _ => AuthStep::Failed(AuthFailure::Protocol("unexpected step".into())),
        }
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    (k.to_string(), v.to_string())
}

// ------------------------------------------------------------------ policy

#[derive(Default)]
struct TestPolicy {
    /// Target names that exist.
    targets: Vec<String>,
    /// Initiators refused by ACL.
    denied: Vec<String>,
    /// CHAP secret required (user "alice").
    chap_secret: Option<String>,
    allow_discovery: bool,
    sessions: BTreeMap<u16, SessionParams>,
    next_tsih: u16,
    operational: Option<OperationalConfig>,
}

impl TestPolicy {
    fn new() -> Self {
        TestPolicy {
            targets: vec![TARGET.to_string()],
            allow_discovery: true,
            next_tsih: 0x10,
            ..Default::default()
        }
    }
}

impl TargetLoginPolicy for TestPolicy {
    fn admit(&mut self, id: &LoginIdentity) -> Result<Admission, LoginStatus> {
        match (&id.target_name, id.session_type) {
            (_, SessionType::Discovery) if !self.allow_discovery => {
                return Err(LoginStatus::SESSION_TYPE_NOT_SUPPORTED)
            }
            (Some(t), _) if !self.targets.contains(t) => return Err(LoginStatus::NOT_FOUND),
            _ => {}
        }
        if self.denied.contains(&id.initiator_name) {
            return Err(LoginStatus::AUTHORIZATION_FAILURE);
        }
        Ok(Admission {
            authenticator: self.chap_secret.as_ref().map(|s| {
                Box::new(ToyTargetAuth {
                    user: "alice".into(),
                    secret: s.clone(),
                    target_secret: "tsecret".into(),
                    challenge: "0x0123456789".into(),
                    state: 0,
                }) as Box<dyn Authenticator>
            }),
            target_alias: Some("disk one".into()),
            operational: self.operational.clone(),
        })
    }

    fn join_session(&mut self, id: &LoginIdentity) -> Result<SessionJoin, LoginStatus> {
        let s = self
            .sessions
            .get(&id.tsih)
            .ok_or(LoginStatus::SESSION_DOES_NOT_EXIST)?;
        Ok(SessionJoin {
            session: s.clone(),
            exp_cmd_sn: CmdSn::new(100),
            max_cmd_sn: CmdSn::new(131),
        })
    }

    fn new_session(
        &mut self,
        _id: &LoginIdentity,
        session: &SessionParams,
    ) -> Result<u16, LoginStatus> {
        let tsih = self.next_tsih;
        self.next_tsih += 1;
        self.sessions.insert(tsih, session.clone());
        Ok(tsih)
    }
}

// ------------------------------------------------------------------ driver

/// Through the real codec, so that the state machines' PDUs are valid on the wire.
fn wire_req(r: LoginRequest) -> LoginRequest {
    let bytes = Pdu::from(r).encode(DigestConfig::NONE).to_bytes();
    match Pdu::decode(bytes, DigestConfig::NONE).expect("decodes") {
        Pdu::LoginRequest(r) => r,
        p => panic!("not a login request: {p:?}"),
    }
}

fn wire_resp(r: LoginResponse) -> LoginResponse {
    let bytes = Pdu::from(r).encode(DigestConfig::NONE).to_bytes();
    match Pdu::decode(bytes, DigestConfig::NONE).expect("decodes") {
        Pdu::LoginResponse(r) => r,
        p => panic!("not a login response: {p:?}"),
    }
}

struct Run {
    initiator: Result<LoginOutcome, LoginError>,
    target: Result<LoginOutcome, LoginError>,
    requests: Vec<LoginRequest>,
    responses: Vec<LoginResponse>,
}

fn run(mut init: InitiatorLogin, cfg: TargetLoginConfig, policy: &mut TestPolicy) -> Run {
    let mut target = TargetLogin::new(cfg);
    let mut req = init.start();
    let (mut requests, mut responses) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let r = wire_req(req);
        requests.push(r.clone());
        let (resp, tres) = match target.handle_request(r, policy) {
            TargetStep::Send(resp) => (resp, None),
            TargetStep::Complete(resp, o) => (resp, Some(Ok(o))),
            TargetStep::Fail(resp, e) => (resp, Some(Err(e))),
        };
        let resp = wire_resp(resp);
        responses.push(resp.clone());
        match (init.handle_response(resp), tres) {
            (Ok(InitiatorStep::Send(next)), None) => req = next,
            (Ok(InitiatorStep::Complete(o)), Some(t)) => {
                return Run {
                    initiator: Ok(o),
                    target: t,
                    requests,
                    responses,
                }
            }
            (Err(e), Some(t)) => {
                return Run {
                    initiator: Err(e),
                    target: t,
                    requests,
                    responses,
                }
            }
            (Err(e), None) => {
                return Run {
                    initiator: Err(e),
                    target: Err(LoginError::Protocol("initiator gave up".into())),
                    requests,
                    responses,
                }
            }
            (i, t) => panic!("sides disagree: initiator {i:?}, target {t:?}"),
        }
    }
    panic!("login did not end");
}

fn normal_cfg() -> InitiatorLoginConfig {
    let mut c = InitiatorLoginConfig::new(INITIATOR, Some(TARGET.to_string()), ISID);
    c.cmd_sn = CmdSn::new(7);
    c.itt = 0x1234;
    c
}

fn with_toy_auth(mut c: InitiatorLoginConfig, secret: &str) -> InitiatorLoginConfig {
    c.authenticator = Some(Box::new(ToyInitiatorAuth {
        user: "alice".into(),
        secret: secret.into(),
        state: 0,
        target_secret: None,
    }));
    c
}

fn with_mutual_toy_auth(
    mut c: InitiatorLoginConfig,
    secret: &str,
    target_secret: &str,
) -> InitiatorLoginConfig {
    c.authenticator = Some(Box::new(ToyInitiatorAuth {
        user: "alice".into(),
        secret: secret.into(),
        state: 0,
        target_secret: Some(target_secret.into()),
    }));
    c
}

fn keys_of(r: &LoginRequest) -> Vec<KeyValue> {
    parse_kv(&r.data).unwrap()
}

fn has_key(kvs: &[KeyValue], k: &str) -> bool {
    kvs.iter().any(|(kk, _)| kk == k)
}

// ------------------------------------------------------------------- tests

#[test]
fn no_auth_login_agrees_on_everything() {
    let mut policy = TestPolicy::new();
    let cfg = TargetLoginConfig {
        initial_stat_sn: StatSn::new(5000),
        ..TargetLoginConfig::default()
    };
    let r = run(InitiatorLogin::new(normal_cfg()), cfg, &mut policy);
    let (i, t) = (r.initiator.unwrap(), r.target.unwrap());
    // No authenticator: the initiator skipped the security stage.
    assert_eq!(r.requests[0].csg, Stage::LoginOperationalNegotiation);
    assert!(r.requests[0].transit);
    assert_eq!(r.requests[0].nsg, Stage::FullFeaturePhase);
    assert_eq!(i.session, t.session);
    assert_eq!(i.tsih, 0x10);
    assert_eq!(t.tsih, 0x10);
    assert_eq!(i.session.initiator_name, INITIATOR);
    assert_eq!(i.session.target_name.as_deref(), Some(TARGET));
    assert_eq!(i.session.target_alias.as_deref(), Some("disk one"));
    assert_eq!(i.session.target_portal_group_tag, Some(1));
    // Both sides' OperationalConfig::default(): the proposals win.
    assert!(!i.session.initial_r2t);
    assert!(i.session.immediate_data);
    assert_eq!(i.session.max_burst_length, 1_048_576);
    assert_eq!(i.session.first_burst_length, 262_144);
    assert_eq!(i.session.max_connections, 8);
    // Declarations cross over.
    assert_eq!(
        i.connection.max_send_data_segment_length,
        t.connection.max_recv_data_segment_length
    );
    assert_eq!(
        t.connection.max_send_data_segment_length,
        i.connection.max_recv_data_segment_length
    );
    assert_eq!(i.connection.digests(), DigestConfig::NONE);
    // Sequence numbers: StatSN starts at the configured value; CmdSN does not move.
    assert_eq!(r.responses[0].stat_sn, StatSn::new(5000));
    assert_eq!(i.stat_sn, t.stat_sn);
    assert_eq!(i.stat_sn.get(), 5000 + r.responses.len() as u32 - 1);
    assert!(r
        .requests
        .iter()
        .all(|q| q.cmd_sn == CmdSn::new(7) && q.itt == 0x1234));
    assert_eq!(i.exp_cmd_sn, CmdSn::new(7));
    assert_eq!(i.max_cmd_sn, CmdSn::new(7 + 31));
    for (n, q) in r.requests.iter().enumerate().skip(1) {
        assert_eq!(q.exp_stat_sn, r.responses[n - 1].stat_sn.successor());
    }
    // TSIH only in the final response.
    let last = r.responses.last().unwrap();
    assert!(last.transit && last.nsg == Stage::FullFeaturePhase);
    assert!(r.responses[..r.responses.len() - 1]
        .iter()
        .all(|p| p.tsih == 0));
    assert_eq!(i.auth_method, None);
}

#[test]
fn toy_chap_login_succeeds() {
    let mut policy = TestPolicy::new();
    policy.chap_secret = Some("s3cret".into());
    let r = run(
        InitiatorLogin::new(with_toy_auth(normal_cfg(), "s3cret")),
        TargetLoginConfig::default(),
        &mut policy,
    );
    let (i, t) = (r.initiator.unwrap(), r.target.unwrap());
    assert_eq!(i.session, t.session);
    assert_eq!(i.auth_method.as_deref(), Some("CHAP"));
    assert_eq!(t.auth_method.as_deref(), Some("CHAP"));
    let first = keys_of(&r.requests[0]);
    assert_eq!(r.requests[0].csg, Stage::SecurityNegotiation);
    assert!(first.contains(&kv("AuthMethod", "CHAP")));
    assert!(first.contains(&kv("SessionType", "Normal")));
    // Security → Operational → FFP.
    assert!(r
        .requests
        .iter()
        .any(|q| q.csg == Stage::LoginOperationalNegotiation));
}

#[test]
fn mutual_toy_chap_transits_with_the_target_proof() {
    let mut policy = TestPolicy::new();
    policy.chap_secret = Some("s3cret".into());
    let r = run(
        InitiatorLogin::new(with_mutual_toy_auth(normal_cfg(), "s3cret", "tsecret")),
        TargetLoginConfig::default(),
        &mut policy,
    );
    let (i, t) = (r.initiator.unwrap(), r.target.unwrap());
    assert_eq!(i.session, t.session);
    assert_eq!(i.auth_method.as_deref(), Some("CHAP"));
    // Like open-iscsi (and as tgt requires): T=1 on the PDU carrying
    // CHAP_R, none on the opening CHAP_A; the target transits in the
    // response that carries its own CHAP_R.
    let with_r = r
        .requests
        .iter()
        .position(|q| has_key(&keys_of(q), "CHAP_R"))
        .unwrap();
    assert!(r.requests[with_r].transit);
    let with_a = r
        .requests
        .iter()
        .position(|q| has_key(&keys_of(q), "CHAP_A"))
        .unwrap();
    assert!(!r.requests[with_a].transit);
    let proof = &r.responses[with_r];
    assert!(proof.transit && proof.nsg == Stage::LoginOperationalNegotiation);
    assert!(parse_kv(&proof.data)
        .unwrap()
        .contains(&kv("CHAP_R", "tsecret0xfeed")));
}

#[test]
fn mutual_toy_chap_bad_target_proof_fails_on_the_initiator() {
    let mut policy = TestPolicy::new();
    policy.chap_secret = Some("s3cret".into());
    let r = run(
        InitiatorLogin::new(with_mutual_toy_auth(
            normal_cfg(),
            "s3cret",
            "not-the-target-secret",
        )),
        TargetLoginConfig::default(),
        &mut policy,
    );
    assert!(matches!(
        r.initiator,
        Err(LoginError::Auth(AuthFailure::AuthenticationFailed(_)))
    ));
}

#[test]
fn error_response_without_isid_still_reports_the_status() {
    // tgt sends error responses with ISID and ITT zero.
    let mut init = InitiatorLogin::new(normal_cfg());
    let req = init.start();
    let mut resp = response_to(
        &req,
        false,
        Stage::LoginOperationalNegotiation,
        Bytes::new(),
        0,
    );
    resp.isid = Isid::default();
    resp.itt = 0;
    resp.status_class = 2;
    resp.status_detail = 1;
    assert_eq!(
        init.handle_response(resp),
        Err(LoginError::Refused {
            status: LoginStatus::AUTHENTICATION_FAILURE
        })
    );
}

#[test]
fn toy_chap_wrong_secret_is_authentication_failure() {
    let mut policy = TestPolicy::new();
    policy.chap_secret = Some("s3cret".into());
    let r = run(
        InitiatorLogin::new(with_toy_auth(normal_cfg(), "wrong")),
        TargetLoginConfig::default(),
        &mut policy,
    );
    assert!(matches!(
        r.target,
        Err(LoginError::Auth(AuthFailure::AuthenticationFailed(_)))
    ));
    assert_eq!(
        r.initiator,
        Err(LoginError::Refused {
            status: LoginStatus::AUTHENTICATION_FAILURE
        })
    );
    assert_eq!(
        r.initiator.unwrap_err().to_string(),
        "login refused by the target: authentication failed (status 0201)"
    );
}

#[test]
fn auth_required_but_not_offered() {
    let mut policy = TestPolicy::new();
    policy.chap_secret = Some("s3cret".into());
    let r = run(
        InitiatorLogin::new(normal_cfg()),
        TargetLoginConfig::default(),
        &mut policy,
    );
    assert_eq!(
        r.target.unwrap_err().login_status(),
        LoginStatus::AUTHENTICATION_FAILURE
    );
    assert_eq!(r.responses.last().unwrap().status_class, 2);
    assert_eq!(r.responses.last().unwrap().status_detail, 1);
    assert!(
        matches!(r.initiator, Err(LoginError::Refused { status }) if status == LoginStatus::AUTHENTICATION_FAILURE)
    );
}

#[test]
fn initiator_offering_chap_or_none_gets_none_from_an_open_target() {
    let mut policy = TestPolicy::new();
    let mut c = with_toy_auth(normal_cfg(), "whatever");
    c.allow_no_auth = true;
    let r = run(
        InitiatorLogin::new(c),
        TargetLoginConfig::default(),
        &mut policy,
    );
    assert!(keys_of(&r.requests[0]).contains(&kv("AuthMethod", "CHAP,None")));
    assert!(r.requests[0].transit);
    assert!(r.responses[0]
        .data
        .windows(15)
        .any(|w| w == b"AuthMethod=None"));
    let i = r.initiator.unwrap();
    assert_eq!(i.auth_method, None);
    assert_eq!(i.session, r.target.unwrap().session);
}

#[test]
fn restrictive_target_limits_are_respected_by_both() {
    let mut policy = TestPolicy::new();
    policy.operational = Some(OperationalConfig {
        max_burst_length: 65536,
        first_burst_length: 16384,
        max_recv_data_segment_length: 16384,
        immediate_data: false,
        initial_r2t: true,
        max_connections: 1,
        header_digest: vec![Digest::Crc32c],
        data_digest: vec![Digest::Crc32c, Digest::None],
        ..OperationalConfig::default()
    });
    let mut c = normal_cfg();
    c.operational.data_digest = vec![Digest::Crc32c, Digest::None];
    let r = run(
        InitiatorLogin::new(c),
        TargetLoginConfig::default(),
        &mut policy,
    );
    let (i, t) = (r.initiator.unwrap(), r.target.unwrap());
    assert_eq!(i.session, t.session);
    let s = &i.session;
    assert_eq!(s.max_burst_length, 65536);
    assert!(s.initial_r2t, "OR: the target's Yes wins");
    assert!(!s.immediate_data, "AND: the target's No wins");
    // RFC 7143 §13.14: with InitialR2T=Yes and ImmediateData=No,
    // FirstBurstLength is Irrelevant and keeps its default.
    let answers: Vec<KeyValue> = r
        .responses
        .iter()
        .flat_map(|p| parse_kv(&p.data).unwrap())
        .collect();
    assert!(
        answers.contains(&kv("FirstBurstLength", "Irrelevant")),
        "{answers:?}"
    );
    assert_eq!(s.first_burst_length, 65536);
    assert_eq!(s.max_connections, 1);
    assert_eq!(i.connection.max_send_data_segment_length, 16384);
    // HeaderDigest: initiator offered "None,CRC32C", target accepts only CRC32C.
    assert_eq!(i.connection.digests(), DigestConfig::BOTH);
    assert_eq!(t.connection.digests(), DigestConfig::BOTH);
}

#[test]
fn target_offers_keys_the_initiator_did_not() {
    // A minimal initiator that offers nothing: the target must offer the
    // keys whose RFC default it cannot accept, and wait for the answers
    // before transiting.
    let mut policy = TestPolicy::new();
    policy.operational = Some(OperationalConfig {
        max_burst_length: 4096,
        first_burst_length: 4096,
        ..OperationalConfig::default()
    });
    let mut target = TargetLogin::new(TargetLoginConfig::default());
    let names = encode_kv(&[("InitiatorName", INITIATOR), ("TargetName", TARGET)]);
    let req = request(
        Stage::LoginOperationalNegotiation,
        true,
        Stage::FullFeaturePhase,
        names,
    );
    let TargetStep::Send(resp) = target.handle_request(req, &mut policy) else {
        panic!()
    };
    assert!(
        !resp.transit,
        "offers pending: the target may not transit yet"
    );
    let kvs = parse_kv(&resp.data).unwrap();
    assert!(kvs.contains(&kv("MaxBurstLength", "4096")), "{kvs:?}");
    assert!(has_key(&kvs, "MaxRecvDataSegmentLength"));
    // FirstBurstLength default (65536) is above 4096 too.
    assert!(kvs.contains(&kv("FirstBurstLength", "4096")));
    let answers = encode_kv(&[("MaxBurstLength", "2048"), ("FirstBurstLength", "2048")]);
    let req = request(
        Stage::LoginOperationalNegotiation,
        true,
        Stage::FullFeaturePhase,
        answers,
    );
    let TargetStep::Complete(resp, out) = target.handle_request(req, &mut policy) else {
        panic!()
    };
    assert!(resp.transit && resp.nsg == Stage::FullFeaturePhase && resp.tsih != 0);
    assert_eq!(out.session.max_burst_length, 2048);
    assert_eq!(out.session.first_burst_length, 2048);
}

#[test]
fn skipping_the_operational_stage() {
    // Nothing to negotiate: Security → FFP directly.
    let mut policy = TestPolicy::new();
    let mut target = TargetLogin::new(TargetLoginConfig::default());
    let data = encode_kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("AuthMethod", "None"),
    ]);
    let req = request(
        Stage::SecurityNegotiation,
        true,
        Stage::FullFeaturePhase,
        data.clone(),
    );
    let TargetStep::Complete(resp, out) = target.handle_request(req, &mut policy) else {
        panic!()
    };
    assert_eq!(
        (resp.csg, resp.nsg),
        (Stage::SecurityNegotiation, Stage::FullFeaturePhase)
    );
    assert_eq!(out.session.max_burst_length, 262_144, "RFC default");
    let kvs = parse_kv(&resp.data).unwrap();
    assert!(kvs.contains(&kv("AuthMethod", "None")));
    assert!(has_key(&kvs, "MaxRecvDataSegmentLength"));
    // With limits below the defaults the target moves to the operational stage instead.
    let mut policy = TestPolicy::new();
    policy.operational = Some(OperationalConfig {
        immediate_data: false,
        ..OperationalConfig::default()
    });
    let mut target = TargetLogin::new(TargetLoginConfig::default());
    let req = request(
        Stage::SecurityNegotiation,
        true,
        Stage::FullFeaturePhase,
        data,
    );
    let TargetStep::Send(resp) = target.handle_request(req, &mut policy) else {
        panic!()
    };
    assert!(resp.transit);
    assert_eq!(resp.nsg, Stage::LoginOperationalNegotiation);
    assert_eq!(target.stage(), Stage::LoginOperationalNegotiation);
}

#[test]
fn tiny_segments_use_continuation_both_ways() {
    let mut policy = TestPolicy::new();
    policy.chap_secret = Some("s3cret".into());
    let mut c = with_toy_auth(normal_cfg(), "s3cret");
    c.max_segment = 16;
    let cfg = TargetLoginConfig {
        max_segment: 16,
        ..TargetLoginConfig::default()
    };
    let r = run(InitiatorLogin::new(c), cfg, &mut policy);
    let (i, t) = (r.initiator.unwrap(), r.target.unwrap());
    assert_eq!(i.session, t.session);
    assert!(r.requests.iter().all(|q| q.data.len() <= 16));
    assert!(r.responses.iter().all(|p| p.data.len() <= 16));
    assert!(r.requests.iter().any(|q| q.continue_));
    assert!(r.responses.iter().any(|p| p.continue_));
    // C=1 never with T=1.
    assert!(r.requests.iter().all(|q| !(q.continue_ && q.transit)));
    assert!(r.responses.iter().all(|p| !(p.continue_ && p.transit)));
    assert!(r.requests.len() > 20, "{} requests", r.requests.len());
    assert_eq!(i.session.max_burst_length, 1_048_576);
}

#[test]
fn discovery_session_then_send_targets() {
    let mut policy = TestPolicy::new();
    let c = InitiatorLoginConfig::new(INITIATOR, None, ISID);
    let r = run(
        InitiatorLogin::new(c),
        TargetLoginConfig::default(),
        &mut policy,
    );
    let (i, t) = (r.initiator.unwrap(), r.target.unwrap());
    assert_eq!(i.session.session_type, SessionType::Discovery);
    assert_eq!(i.session, t.session);
    assert_eq!(i.session.target_name, None);
    assert_eq!(i.session.target_portal_group_tag, None);
    let first = keys_of(&r.requests[0]);
    assert!(first.contains(&kv("SessionType", "Discovery")));
    assert!(!has_key(&first, "TargetName"));
    // Session keys are irrelevant in discovery: not offered.
    assert!(!has_key(&first, "MaxBurstLength"));
    assert!(!has_key(&first, "InitialR2T"));
    assert!(has_key(&first, "MaxRecvDataSegmentLength"));
    // SendTargets over the text helpers.
    let targets = vec![DiscoveredTarget {
        name: TARGET.into(),
        alias: None,
        addresses: vec![("127.0.0.1:3260".into(), 1)],
    }];
    let text = encode_kv(&encode_send_targets(&targets));
    assert_eq!(
        parse_send_targets(&parse_kv(&text).unwrap()).unwrap(),
        targets
    );
}

#[test]
fn discovery_refused_when_not_supported() {
    let mut policy = TestPolicy::new();
    policy.allow_discovery = false;
    let r = run(
        InitiatorLogin::new(InitiatorLoginConfig::new(INITIATOR, None, ISID)),
        TargetLoginConfig::default(),
        &mut policy,
    );
    assert!(
        matches!(r.initiator, Err(LoginError::Refused { status }) if status == LoginStatus::SESSION_TYPE_NOT_SUPPORTED)
    );
}

#[test]
fn failure_statuses_reach_the_initiator() {
    // Unknown target.
    let mut policy = TestPolicy::new();
    let mut c = normal_cfg();
    c.target_name = Some("iqn.2024-01.org.example:nope".into());
    let r = run(
        InitiatorLogin::new(c),
        TargetLoginConfig::default(),
        &mut policy,
    );
    let e = r.initiator.unwrap_err();
    assert_eq!(e.login_status(), LoginStatus::NOT_FOUND);
    assert!(e.to_string().contains("target not found"), "{e}");
    assert!(!e.is_retryable());
    // ACL.
    let mut policy = TestPolicy::new();
    policy.denied.push(INITIATOR.into());
    let r = run(
        InitiatorLogin::new(normal_cfg()),
        TargetLoginConfig::default(),
        &mut policy,
    );
    assert_eq!(
        r.initiator.unwrap_err().login_status(),
        LoginStatus::AUTHORIZATION_FAILURE
    );
    // Normal session without TargetName.
    let mut policy = TestPolicy::new();
    let mut c = normal_cfg();
    c.target_name = None;
    c.session_type = SessionType::Normal;
    let r = run(
        InitiatorLogin::new(c),
        TargetLoginConfig::default(),
        &mut policy,
    );
    assert_eq!(
        r.target.unwrap_err(),
        LoginError::MissingParameter("TargetName")
    );
    assert_eq!(
        r.initiator.unwrap_err().login_status(),
        LoginStatus::MISSING_PARAMETER
    );
    // Joining a session that does not exist.
    let mut policy = TestPolicy::new();
    let mut c = normal_cfg();
    c.tsih = 0x99;
    let r = run(
        InitiatorLogin::new(c),
        TargetLoginConfig::default(),
        &mut policy,
    );
    assert_eq!(
        r.initiator.unwrap_err().login_status(),
        LoginStatus::SESSION_DOES_NOT_EXIST
    );
}

#[test]
fn second_connection_joins_without_leading_only_keys() {
    let mut policy = TestPolicy::new();
    let first = run(
        InitiatorLogin::new(normal_cfg()),
        TargetLoginConfig::default(),
        &mut policy,
    );
    let lead = first.initiator.unwrap();
    let mut c = normal_cfg();
    c.tsih = lead.tsih;
    c.cid = 1;
    let r = run(
        InitiatorLogin::new(c),
        TargetLoginConfig::default(),
        &mut policy,
    );
    let kvs = keys_of(&r.requests[0]);
    assert!(has_key(&kvs, "InitiatorName") && has_key(&kvs, "TargetName"));
    for lo in [
        "SessionType",
        "MaxBurstLength",
        "InitialR2T",
        "MaxConnections",
        "ErrorRecoveryLevel",
    ] {
        assert!(!has_key(&kvs, lo), "{lo} sent on a non-leading connection");
    }
    assert!(has_key(&kvs, "HeaderDigest") && has_key(&kvs, "MaxRecvDataSegmentLength"));
    let (i, t) = (r.initiator.unwrap(), r.target.unwrap());
    assert_eq!(i.tsih, lead.tsih);
    assert_eq!(t.tsih, lead.tsih);
    assert_eq!(t.cid, 1);
    // The target reports the session's parameters and window.
    assert_eq!(t.session, lead.session);
    assert_eq!((t.exp_cmd_sn.get(), t.max_cmd_sn.get()), (100, 131));
    assert!(r.responses.iter().all(|p| p.tsih == lead.tsih));
}

#[test]
fn duplicate_key_in_request_is_initiator_error() {
    let mut policy = TestPolicy::new();
    let mut target = TargetLogin::new(TargetLoginConfig::default());
    let data = encode_kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("MaxBurstLength", "4096"),
        ("MaxBurstLength", "8192"),
    ]);
    let req = request(
        Stage::LoginOperationalNegotiation,
        true,
        Stage::FullFeaturePhase,
        data,
    );
    match target.handle_request(req, &mut policy) {
        TargetStep::Fail(resp, e) => {
            assert_eq!((resp.status_class, resp.status_detail), (2, 0));
            assert!(e.to_string().contains("more than once"), "{e}");
        }
        s => panic!("{s:?}"),
    }
    assert!(target.is_finished());
}

#[test]
fn unknown_and_obsolete_keys_are_answered() {
    let mut policy = TestPolicy::new();
    let mut target = TargetLogin::new(TargetLoginConfig::default());
    let data = encode_kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("X-org.example.thing", "1"),
        ("OFMarker", "No"),
        ("IFMarkInt", "2048"),
    ]);
    let req = request(
        Stage::LoginOperationalNegotiation,
        false,
        Stage::LoginOperationalNegotiation,
        data,
    );
    let TargetStep::Send(resp) = target.handle_request(req, &mut policy) else {
        panic!()
    };
    let kvs = parse_kv(&resp.data).unwrap();
    assert!(kvs.contains(&kv("X-org.example.thing", "NotUnderstood")));
    assert!(kvs.contains(&kv("OFMarker", "Reject")));
    assert!(kvs.contains(&kv("IFMarkInt", "Reject")));
    // §13.9: TPGT in the response to the first request naming the target.
    assert!(kvs.contains(&kv("TargetPortalGroupTag", "1")));
    // T=0 request: the target may not transit.
    assert!(!resp.transit);
}

#[test]
fn unsupported_version_and_bad_stage() {
    let mut policy = TestPolicy::new();
    let mut target = TargetLogin::new(TargetLoginConfig::default());
    let mut req = request(
        Stage::SecurityNegotiation,
        false,
        Stage::SecurityNegotiation,
        Bytes::new(),
    );
    req.version_min = 1;
    req.version_max = 2;
    let TargetStep::Fail(resp, _) = target.handle_request(req, &mut policy) else {
        panic!()
    };
    assert_eq!((resp.status_class, resp.status_detail), (2, 5));

    let mut target = TargetLogin::new(TargetLoginConfig::default());
    let req = request(
        Stage::FullFeaturePhase,
        false,
        Stage::FullFeaturePhase,
        Bytes::new(),
    );
    assert!(matches!(
        target.handle_request(req, &mut policy),
        TargetStep::Fail(..)
    ));

    // T and C together.
    let mut target = TargetLogin::new(TargetLoginConfig::default());
    let mut req = request(
        Stage::SecurityNegotiation,
        true,
        Stage::LoginOperationalNegotiation,
        Bytes::new(),
    );
    req.continue_ = true;
    assert!(matches!(
        target.handle_request(req, &mut policy),
        TargetStep::Fail(..)
    ));
}

#[test]
fn initiator_that_never_transits_is_bounded() {
    let mut policy = TestPolicy::new();
    let cfg = TargetLoginConfig {
        max_pdus: 10,
        ..TargetLoginConfig::default()
    };
    let mut target = TargetLogin::new(cfg);
    let first = encode_kv(&[("InitiatorName", INITIATOR), ("TargetName", TARGET)]);
    let mut data = first;
    for n in 1..=11 {
        let req = request(
            Stage::LoginOperationalNegotiation,
            false,
            Stage::FullFeaturePhase,
            data.clone(),
        );
        data = Bytes::new();
        match target.handle_request(req, &mut policy) {
            TargetStep::Send(r) => assert!(!r.transit && n <= 10),
            TargetStep::Fail(r, e) => {
                assert_eq!(n, 11);
                assert_eq!(e, LoginError::TooManyRoundTrips(10));
                assert_eq!(r.status_class, 2);
                return;
            }
            s => panic!("{s:?}"),
        }
    }
    panic!("not bounded");
}

#[test]
fn target_that_never_transits_is_bounded() {
    let mut c = normal_cfg();
    c.max_pdus = 8;
    let mut init = InitiatorLogin::new(c);
    let mut req = init.start();
    for n in 1..=9 {
        let resp = response_to(
            &req,
            false,
            Stage::LoginOperationalNegotiation,
            Bytes::new(),
            n,
        );
        match init.handle_response(resp) {
            Ok(InitiatorStep::Send(r)) => {
                assert!(n <= 8);
                assert!(r.transit, "the initiator keeps asking to transit");
                req = r;
            }
            Err(e) => {
                assert_eq!(n, 9);
                assert_eq!(e, LoginError::TooManyRoundTrips(8));
                return;
            }
            Ok(s) => panic!("{s:?}"),
        }
    }
    panic!("not bounded");
}

#[test]
fn redirect_is_reported_with_addresses() {
    let mut init = InitiatorLogin::new(normal_cfg());
    let req = init.start();
    let mut resp = response_to(
        &req,
        false,
        Stage::LoginOperationalNegotiation,
        encode_kv(&[
            ("TargetAddress", "10.0.0.2:3260,1"),
            ("TargetAddress", "[fd00::2]:3260,1"),
        ]),
        1,
    );
    resp.status_class = 1;
    resp.status_detail = 1;
    match init.handle_response(resp) {
        Err(LoginError::Redirect {
            permanent,
            addresses,
            ..
        }) => {
            assert!(!permanent);
            assert_eq!(
                addresses,
                vec![
                    "10.0.0.2:3260,1".to_string(),
                    "[fd00::2]:3260,1".to_string()
                ]
            );
        }
        r => panic!("{r:?}"),
    }
    // The login is over.
    assert!(init
        .handle_response(response_to(
            &req,
            false,
            Stage::LoginOperationalNegotiation,
            Bytes::new(),
            2
        ))
        .is_err());
}

#[test]
fn initiator_rejects_target_protocol_violations() {
    // T=1 although the initiator did not ask (it asks only once auth is done).
    let mut init = InitiatorLogin::new(with_toy_auth(normal_cfg(), "x"));
    let req = init.start();
    assert!(!req.transit);
    let resp = response_to(
        &req,
        true,
        Stage::LoginOperationalNegotiation,
        encode_kv(&[("AuthMethod", "CHAP")]),
        1,
    );
    assert!(matches!(
        init.handle_response(resp),
        Err(LoginError::Protocol(_))
    ));

    // A method we did not offer.
    let mut init = InitiatorLogin::new(with_toy_auth(normal_cfg(), "x"));
    let req = init.start();
    let resp = response_to(
        &req,
        false,
        Stage::SecurityNegotiation,
        encode_kv(&[("AuthMethod", "None")]),
        1,
    );
    assert!(init.handle_response(resp).is_err());

    // An answer outside the result function (MaxBurstLength above our offer).
    let mut init = InitiatorLogin::new(normal_cfg());
    let req = init.start();
    let resp = response_to(
        &req,
        true,
        Stage::FullFeaturePhase,
        encode_kv(&[("MaxBurstLength", "16777215")]),
        1,
    );
    assert!(matches!(
        init.handle_response(resp),
        Err(LoginError::Negotiation(_))
    ));

    // Final response of a new session without a TSIH.
    let mut init = InitiatorLogin::new(normal_cfg());
    let req = init.start();
    let mut resp = response_to(&req, true, Stage::FullFeaturePhase, Bytes::new(), 1);
    resp.tsih = 0;
    assert!(matches!(
        init.handle_response(resp),
        Err(LoginError::Protocol(_))
    ));
}

#[test]
fn target_leaving_security_before_mutual_auth_completes_is_refused() {
    let mut c = with_toy_auth(normal_cfg(), "x");
    c.allow_no_auth = false;
    let mut init = InitiatorLogin::new(c);
    let req = init.start();
    // The target agrees on CHAP...
    let resp = response_to(
        &req,
        false,
        Stage::SecurityNegotiation,
        encode_kv(&[("AuthMethod", "CHAP")]),
        1,
    );
    let Ok(InitiatorStep::Send(req)) = init.handle_response(resp) else {
        panic!()
    };
    assert!(keys_of(&req).contains(&kv("CHAP_A", "5")));
    // ...then jumps to the operational stage without a challenge.
    let resp = response_to(
        &req,
        true,
        Stage::LoginOperationalNegotiation,
        Bytes::new(),
        2,
    );
    assert!(init.handle_response(resp).is_err());
}

// ----------------------------------------------------------------- helpers

fn request(csg: Stage, transit: bool, nsg: Stage, data: Bytes) -> LoginRequest {
    LoginRequest {
        transit,
        continue_: false,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: ISID,
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: CmdSn::new(1),
        exp_stat_sn: StatSn::new(0),
        data,
    }
}

/// A hand-made response to `req`, for driving the initiator alone.
fn response_to(
    req: &LoginRequest,
    transit: bool,
    nsg: Stage,
    data: Bytes,
    stat_sn: u32,
) -> LoginResponse {
    LoginResponse {
        transit,
        continue_: false,
        csg: req.csg,
        nsg,
        version_max: 0,
        version_active: 0,
        isid: req.isid,
        tsih: if transit && nsg == Stage::FullFeaturePhase {
            1
        } else {
            0
        },
        itt: req.itt,
        stat_sn: StatSn::new(stat_sn),
        exp_cmd_sn: req.cmd_sn,
        max_cmd_sn: req.cmd_sn.wrapping_add(10),
        status_class: 0,
        status_detail: 0,
        data,
    }
}
