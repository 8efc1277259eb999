//! Login state machines fed arbitrary PDUs (shared by the `login_target`
//! and `login_initiator` fuzz targets and `proto/tests/fuzz_smoke_login.rs`).
//!
//! Every PDU field and text data segment comes from the input, biased
//! towards what a real peer sends (known keys, the current stage, the same
//! ISID/TSIH/CID) so that the machines get deep. Asserts: no panic; the
//! login ends (Complete or Fail/Err) within `max_pdus + 1` PDUs; after the
//! end every PDU is refused; target responses never set T and C together,
//! carry consecutive StatSNs, and a Complete response is T=1, NSG=FFP,
//! status 0 with a non-zero TSIH.

#[path = "input.rs"]
mod input;

pub use input::Input;

use bytes::Bytes;
use proto::login::auth::{AuthFailure, AuthStep, Authenticator, KeyValue};
use proto::login::{
    Admission, InitiatorLogin, InitiatorLoginConfig, InitiatorStep, LoginIdentity, LoginStatus,
    OperationalConfig, SessionJoin, SessionParams, SessionType, TargetLogin, TargetLoginConfig,
    TargetLoginPolicy, TargetStep,
};
use proto::pdu::{Isid, LoginRequest, LoginResponse, Stage};
use proto::serial::{CmdSn, StatSn};
use proto::text::encode_kv;

const KEYS: &[&str] = &[
    "InitiatorName",
    "TargetName",
    "SessionType",
    "AuthMethod",
    "HeaderDigest",
    "DataDigest",
    "MaxConnections",
    "InitialR2T",
    "ImmediateData",
    "MaxRecvDataSegmentLength",
    "MaxBurstLength",
    "FirstBurstLength",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "MaxOutstandingR2T",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "ErrorRecoveryLevel",
    "TargetAlias",
    "InitiatorAlias",
    "TargetAddress",
    "TargetPortalGroupTag",
    "SendTargets",
    "TaskReporting",
    "iSCSIProtocolLevel",
    "X#NodeArchitecture",
    "X-com.example.private",
    "CHAP_A",
    "CHAP_I",
    "CHAP_C",
    "CHAP_N",
    "CHAP_R",
    "OFMarker",
    "IFMarker",
    "",
];

const VALUES: &[&str] = &[
    "iqn.2024-01.org.example:initiator",
    "iqn.2024-01.org.example:disk1",
    "Normal",
    "Discovery",
    "None",
    "CHAP",
    "CHAP,None",
    "CRC32C",
    "None,CRC32C",
    "Yes",
    "No",
    "0",
    "1",
    "2",
    "8192",
    "512",
    "16777215",
    "16777216",
    "4294967296",
    "0x10",
    "0b",
    "Reject",
    "Irrelevant",
    "NotUnderstood",
    "All",
    "5",
    "5,7",
    "0x0123456789abcdef",
    "",
    "a,b,c,",
];

/// A text data segment: known keys and values (after `prefix`), or raw bytes.
fn text(inp: &mut Input, prefix: &[(&str, &str)]) -> Bytes {
    match inp.below(8) {
        0 => Bytes::new(),
        1 => Bytes::copy_from_slice(inp.bytes(300)),
        _ => {
            let n = inp.below(10);
            let mut pairs: Vec<(String, String)> = prefix
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for _ in 0..n {
                let k = inp.pick(KEYS).to_string();
                let v = if inp.one_in(6) {
                    String::from_utf8_lossy(inp.bytes(40)).replace('\0', "")
                } else {
                    inp.pick(VALUES).to_string()
                };
                pairs.push((k, v));
            }
            encode_kv(&pairs)
        }
    }
}

/// `usual` most of the time; any stage about once in `noise / 2`.
fn stage(inp: &mut Input, usual: Stage, noise: usize) -> Stage {
    match inp.below(noise) {
        0 => Stage::SecurityNegotiation,
        1 => Stage::LoginOperationalNegotiation,
        2 => Stage::Reserved,
        3 => Stage::FullFeaturePhase,
        _ => usual,
    }
}

fn next_stage(s: Stage) -> Stage {
    match s {
        Stage::SecurityNegotiation => Stage::LoginOperationalNegotiation,
        _ => Stage::FullFeaturePhase,
    }
}

/// An authenticator whose every step is chosen up front by the input.
struct ScriptedAuth {
    method: String,
    steps: Vec<(u8, Vec<KeyValue>)>,
    at: usize,
}

impl ScriptedAuth {
    fn new(inp: &mut Input) -> Self {
        let method = ["CHAP", "SRP", "None", ""][inp.below(4)].to_string();
        let steps = (0..inp.below(6))
            .map(|_| {
                let kind = inp.u8();
                let keys = (0..inp.below(3))
                    .map(|_| {
                        let k = inp.pick(&KEYS[27..32]).to_string();
                        (k, inp.pick(VALUES).to_string())
                    })
                    .collect();
                (kind, keys)
            })
            .collect();
        ScriptedAuth {
            method,
            steps,
            at: 0,
        }
    }
}

impl Authenticator for ScriptedAuth {
    fn method(&self) -> &str {
        &self.method
    }
    fn step(&mut self, _received: &[KeyValue]) -> AuthStep {
        let Some((kind, keys)) = self.steps.get(self.at).cloned() else {
            return AuthStep::Failed(AuthFailure::Protocol("script ended".into()));
        };
        self.at += 1;
        match kind % 4 {
            0 | 1 => AuthStep::Continue(keys),
            2 => AuthStep::Done(keys),
            _ => AuthStep::Failed(AuthFailure::AuthenticationFailed("scripted".into())),
        }
    }
}

const STATUSES: &[LoginStatus] = &[
    LoginStatus::NOT_FOUND,
    LoginStatus::AUTHORIZATION_FAILURE,
    LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
    LoginStatus::SESSION_DOES_NOT_EXIST,
    LoginStatus::TOO_MANY_CONNECTIONS,
    LoginStatus::OUT_OF_RESOURCES,
];

/// Policy decisions drawn from the input before the login starts.
struct Policy {
    admit: Option<Admission>,
    admit_refusal: Option<LoginStatus>,
    join: Result<SessionJoin, LoginStatus>,
    new_tsih: Result<u16, LoginStatus>,
}

impl Policy {
    fn new(inp: &mut Input) -> Self {
        let (admit, admit_refusal) = match inp.below(6) {
            0 => (None, Some(*inp.pick(STATUSES))),
            n => {
                let authenticator: Option<Box<dyn Authenticator>> =
                    (n >= 4).then(|| Box::new(ScriptedAuth::new(inp)) as Box<dyn Authenticator>);
                let operational = inp.one_in(3).then(|| OperationalConfig {
                    max_recv_data_segment_length: 512 + u32::from(inp.u16()),
                    ..OperationalConfig::default()
                });
                let admission = Admission {
                    authenticator,
                    target_alias: inp.one_in(2).then(|| "alias".to_string()),
                    operational,
                };
                (Some(admission), None)
            }
        };
        let join = if inp.one_in(2) {
            Ok(SessionJoin {
                session: SessionParams::default(),
                exp_cmd_sn: CmdSn::new(inp.u32()),
                max_cmd_sn: CmdSn::new(inp.u32()),
            })
        } else {
            Err(*inp.pick(STATUSES))
        };
        let new_tsih = if inp.one_in(8) {
            Err(LoginStatus::OUT_OF_RESOURCES)
        } else {
            Ok(inp.u16().max(1))
        };
        Policy {
            admit,
            admit_refusal,
            join,
            new_tsih,
        }
    }
}

impl TargetLoginPolicy for Policy {
    fn admit(&mut self, _id: &LoginIdentity) -> Result<Admission, LoginStatus> {
        match (self.admit.take(), self.admit_refusal) {
            (Some(a), _) => Ok(a),
            (None, Some(s)) => Err(s),
            (None, None) => panic!("admit called twice"),
        }
    }
    fn join_session(&mut self, _id: &LoginIdentity) -> Result<SessionJoin, LoginStatus> {
        self.join.clone()
    }
    fn new_session(
        &mut self,
        _id: &LoginIdentity,
        _session: &SessionParams,
    ) -> Result<u16, LoginStatus> {
        self.new_tsih
    }
}

/// How a driven login ended: PDUs fed, and whether it completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub pdus: u32,
    pub complete: bool,
}

/// Drives a [`TargetLogin`] with requests built from `data`.
pub fn target(data: &[u8]) -> Ended {
    let mut inp = Input::new(data);
    let max_pdus = 1 + inp.below(16) as u32;
    let cfg = TargetLoginConfig {
        target_portal_group_tag: inp.u16(),
        initial_stat_sn: StatSn::new(inp.u32()),
        cmd_window: inp.below(4) as u32 * 16,
        max_segment: [1, 7, 64, 8192][inp.below(4)],
        max_text_len: [16, 512, 65536][inp.below(3)],
        max_pdus,
        ..TargetLoginConfig::default()
    };
    let mut expected_stat_sn = cfg.initial_stat_sn;
    let mut policy = Policy::new(&mut inp);
    let mut login = TargetLogin::new(cfg);
    let isid = Isid([inp.u8(), 0, 0, 1, 0, inp.u8()]);
    let tsih = if inp.one_in(4) { inp.u16() } else { 0 };
    let cid = inp.u16();
    let mut sent = 0;
    let mut complete = false;
    // Noisy runs break rules often; quiet ones mostly follow them and get
    // to the end of the login.
    let noise = if inp.bool() { 8 } else { 64 };
    let discovery = inp.one_in(4);
    while sent <= max_pdus {
        assert!(!login.is_finished());
        let csg = stage(&mut inp, login.stage(), noise);
        let prefix: &[(&str, &str)] = match (sent, discovery) {
            (0, false) => &[
                ("InitiatorName", "iqn.2024-01.org.example:initiator"),
                ("TargetName", "iqn.2024-01.org.example:disk1"),
            ],
            (0, true) => &[
                ("InitiatorName", "iqn.2024-01.org.example:initiator"),
                ("SessionType", "Discovery"),
            ],
            _ => &[],
        };
        let req = LoginRequest {
            transit: !inp.one_in(3),
            continue_: inp.one_in(noise),
            csg,
            nsg: stage(&mut inp, next_stage(csg), noise),
            version_max: if inp.one_in(2 * noise) { inp.u8() } else { 0 },
            version_min: if inp.one_in(2 * noise) { inp.u8() } else { 0 },
            isid: if inp.one_in(4 * noise) {
                Isid([inp.u8(); 6])
            } else {
                isid
            },
            tsih: if inp.one_in(4 * noise) {
                inp.u16()
            } else {
                tsih
            },
            itt: inp.u32(),
            cid: if inp.one_in(4 * noise) {
                inp.u16()
            } else {
                cid
            },
            cmd_sn: CmdSn::new(7),
            exp_stat_sn: expected_stat_sn,
            data: if inp.one_in(noise / 4) {
                text(&mut inp, &[])
            } else {
                text(&mut inp, prefix)
            },
        };
        sent += 1;
        let resp = match login.handle_request(req, &mut policy) {
            TargetStep::Send(r) => {
                assert!(r.status_class == 0);
                r
            }
            TargetStep::Complete(r, outcome) => {
                assert!(r.transit && r.nsg == Stage::FullFeaturePhase);
                assert_eq!((r.status_class, r.status_detail), (0, 0));
                assert_ne!(r.tsih, 0, "final response without TSIH");
                assert_eq!(outcome.tsih, r.tsih);
                check_target_response(&r, &mut expected_stat_sn);
                complete = true;
                break;
            }
            TargetStep::Fail(r, e) => {
                assert_ne!(r.status_class, 0, "failure {e} with status 0");
                assert!(!r.transit && !r.continue_);
                check_target_response(&r, &mut expected_stat_sn);
                break;
            }
        };
        check_target_response(&resp, &mut expected_stat_sn);
    }
    assert!(login.is_finished(), "login still running after {sent} PDUs");
    assert!(sent <= max_pdus + 1);
    // Anything after the end is refused.
    let late = LoginRequest {
        transit: false,
        continue_: false,
        csg: login.stage(),
        nsg: login.stage(),
        version_max: 0,
        version_min: 0,
        isid,
        tsih,
        itt: 0,
        cid,
        cmd_sn: CmdSn::new(7),
        exp_stat_sn: StatSn::new(0),
        data: Bytes::new(),
    };
    assert!(matches!(
        login.handle_request(late, &mut policy),
        TargetStep::Fail(..)
    ));
    Ended {
        pdus: sent,
        complete,
    }
}

fn check_target_response(r: &LoginResponse, expected_stat_sn: &mut StatSn) {
    assert!(!(r.transit && r.continue_), "T and C both set");
    assert_eq!(r.stat_sn, *expected_stat_sn);
    *expected_stat_sn = expected_stat_sn.successor();
    if r.transit {
        assert!(r.nsg > r.csg);
    }
}

/// Drives an [`InitiatorLogin`] with responses built from `data`.
pub fn initiator(data: &[u8]) -> Ended {
    let mut inp = Input::new(data);
    let max_pdus = 1 + inp.below(16) as u32;
    let discovery = inp.one_in(3);
    let isid = Isid([0x80, 0, 0, 1, 0, inp.u8()]);
    let mut cfg = InitiatorLoginConfig::new(
        "iqn.2024-01.org.example:initiator",
        (!discovery).then(|| "iqn.2024-01.org.example:disk1".to_string()),
        isid,
    );
    if discovery {
        assert_eq!(cfg.session_type, SessionType::Discovery);
    }
    cfg.tsih = if inp.one_in(4) { inp.u16() } else { 0 };
    cfg.cid = inp.u16();
    cfg.itt = inp.u32();
    cfg.cmd_sn = CmdSn::new(inp.u32());
    cfg.max_pdus = max_pdus;
    cfg.max_segment = [1, 7, 64, 8192][inp.below(4)];
    cfg.max_text_len = [16, 512, 65536][inp.below(3)];
    cfg.allow_no_auth = inp.bool();
    if inp.one_in(2) {
        cfg.authenticator = Some(Box::new(ScriptedAuth::new(&mut inp)));
    }
    let tsih = cfg.tsih;
    let itt = cfg.itt;
    let mut login = InitiatorLogin::new(cfg);
    let mut req = login.start();
    let mut stat_sn = StatSn::new(inp.u32());
    let mut received = 0;
    let mut complete = false;
    let noise = if inp.bool() { 8 } else { 64 };
    while received <= max_pdus {
        assert!(!(req.transit && req.continue_), "request with T and C");
        let csg = stage(&mut inp, req.csg, noise);
        let class = if inp.one_in(noise) {
            inp.below(5) as u8
        } else {
            0
        };
        let transit = if inp.one_in(noise / 2) {
            !req.transit
        } else {
            req.transit
        };
        let resp = LoginResponse {
            transit,
            continue_: inp.one_in(noise),
            csg,
            nsg: stage(&mut inp, req.nsg, noise),
            version_max: 0,
            version_active: if inp.one_in(2 * noise) { inp.u8() } else { 0 },
            isid: if inp.one_in(4 * noise) {
                Isid([inp.u8(); 6])
            } else {
                isid
            },
            tsih: match inp.below(noise) {
                0 => inp.u16(),
                1 => 0,
                _ => tsih.max(1),
            },
            itt: if inp.one_in(4 * noise) {
                inp.u32()
            } else {
                itt
            },
            stat_sn,
            exp_cmd_sn: req.cmd_sn,
            max_cmd_sn: req.cmd_sn.wrapping_add(inp.u8().into()),
            status_class: class,
            status_detail: if class == 0 && !inp.one_in(noise) {
                0
            } else {
                inp.u8()
            },
            data: text(&mut inp, &[]),
        };
        stat_sn = stat_sn.wrapping_add(if inp.one_in(16) { inp.u32() } else { 1 });
        received += 1;
        match login.handle_response(resp) {
            Ok(InitiatorStep::Send(r)) => req = r,
            Ok(InitiatorStep::Complete(outcome)) => {
                assert_ne!(outcome.tsih, 0);
                complete = true;
                break;
            }
            Err(_) => break,
        }
    }
    assert!(received <= max_pdus + 1);
    let late = LoginResponse {
        transit: false,
        continue_: false,
        csg: Stage::SecurityNegotiation,
        nsg: Stage::SecurityNegotiation,
        version_max: 0,
        version_active: 0,
        isid,
        tsih,
        itt,
        stat_sn,
        exp_cmd_sn: CmdSn::new(0),
        max_cmd_sn: CmdSn::new(0),
        status_class: 0,
        status_detail: 0,
        data: Bytes::new(),
    };
    assert!(
        login.handle_response(late).is_err(),
        "login still running after {received} responses"
    );
    Ended {
        pdus: received,
        complete,
    }
}
