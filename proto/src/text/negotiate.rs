//! Text-mode negotiation (RFC 7143 §6.2) for both roles, driven by the key
//! table in [`crate::text::keys`].
//!
//! Two pure functions carry the rules: [`answer_offer`] (the responder picks
//! a value) and [`accept_response`] (the originator checks the answer).
//! [`Negotiator`] keeps the state of one login (or one full-feature Text
//! exchange): what we offered, what the peer already sent (duplicates are a
//! protocol error), and the results, from which it builds
//! [`SessionParams`]/[`ConnectionParams`].
//!
//! Rules implemented, quoted from RFC 7143 §6.2 unless noted:
//! - "the responding party MUST respond with the same key and the first
//!   value that it supports ... selected from the originator list"; no match
//!   gives `Reject`; "None" is only selected when offered.
//! - Boolean AND/OR, numerical Minimum/Maximum result functions (§6.2.2):
//!   the answer must respect the function ("The selection of a value not
//!   admissible under the selection rules is considered a negotiation
//!   failure").
//! - Out-of-range offers are answered `Reject`.
//! - "If a key is not understood ... NotUnderstood"; keys irrelevant to
//!   this session (discovery, non-leading connection, FirstBurstLength with
//!   InitialR2T=Yes and ImmediateData=No) are answered `Irrelevant`.
//! - "Neither the initiator nor the target should attempt to declare or
//!   negotiate a parameter more than once during login, except for
//!   responses to specific keys that explicitly allow repeated key
//!   declarations (e.g., TargetAddress). An attempt to renegotiate/redeclare
//!   parameters not specifically allowed MUST be detected by the initiator
//!   and target." → [`NegotiationError::Duplicate`]. Deliberate leniency: a
//!   declarative key repeated with the *same* value is tolerated.
//! - A responder's `Reject`/`Irrelevant`/`NotUnderstood` leaves the key at
//!   its default.
//!
//! Boolean answers that the RFC makes OPTIONAL (AND with `No`, OR with
//! `Yes`) are always sent: simpler, and legal.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::login::params::{
    ConnectionParams, Digest, OperationalConfig, SessionParams, SessionType, MAX_SEGMENT_VALUE,
};
use crate::text::keys::{
    self, bool_str, lookup, parse_bool, parse_number, KeyDef, KeyType, IRRELEVANT, NONE,
    NOT_UNDERSTOOD, REJECT,
};
use crate::text::KeyValue;

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Target,
}

impl Role {
    /// The other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Target,
            Role::Target => Role::Initiator,
        }
    }
}

/// Where the negotiation happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Login (security or operational stage).
    Login,
    /// Text Request/Response in the full-feature phase (§6.5 "Operational
    /// parameter negotiation outside the login phase").
    FullFeature,
}

/// A negotiation failure: the login must fail (target: status 0x0200
/// "Initiator error"; initiator: drop the connection).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// RFC 7143 §6.2: a key negotiated or declared twice.
    #[error("key {0} sent more than once")]
    Duplicate(String),
    /// A response that the selection rules do not allow.
    #[error("answer {key}={value} is not admissible for our offer {offered:?}")]
    NotAdmissible {
        key: String,
        offered: String,
        value: String,
    },
    /// A declared value outside the key's syntax or range.
    #[error("illegal value {key}={value}")]
    IllegalValue { key: String, value: String },
    /// The peer sent a key only the other role may send.
    #[error("key {0} may not be sent by the {1:?}")]
    WrongSender(String, Role),
    /// A special answer (Reject/Irrelevant/NotUnderstood) for a key we did
    /// not offer.
    #[error("unsolicited answer {key}={value}")]
    UnsolicitedAnswer { key: String, value: String },
}

fn is_special(v: &str) -> bool {
    matches!(v, REJECT | IRRELEVANT | NOT_UNDERSTOOD)
}

fn num_in_range(def: &KeyDef, v: &str) -> Option<u64> {
    let n = parse_number(v)?;
    let (lo, hi) = def.range.unwrap_or((0, u64::MAX));
    (lo..=hi).contains(&n).then_some(n)
}

/// Responder: the answer to an offer `key=offered`, given this side's value
/// `local` (a preference list for list keys). Only for negotiated keys
/// ([`KeyDef::is_negotiated`]); declarative keys get no answer.
pub fn answer_offer(def: &KeyDef, offered: &str, local: &str) -> String {
    match def.ty {
        KeyType::List => {
            let ours: Vec<&str> = local.split(',').collect();
            // RFC 7143 §6.2.1: "If an acceptor does not understand any
            // particular value in a list, it MUST ignore it." We pick the
            // first offered value we support.
            offered
                .split(',')
                .filter(|v| !is_special(v))
                .find(|v| ours.contains(v))
                .unwrap_or(REJECT)
                .to_string()
        }
        KeyType::BoolAnd | KeyType::BoolOr => {
            let (Some(o), Some(l)) = (parse_bool(offered), parse_bool(local)) else {
                return REJECT.to_string();
            };
            let r = if def.ty == KeyType::BoolAnd {
                o && l
            } else {
                o || l
            };
            bool_str(r).to_string()
        }
        KeyType::NumMin | KeyType::NumMax => {
            let Some(o) = num_in_range(def, offered) else {
                return REJECT.to_string();
            };
            let l = num_in_range(def, local).unwrap_or(o);
            let r = if def.ty == KeyType::NumMin {
                o.min(l)
            } else {
                o.max(l)
            };
            r.to_string()
        }
        KeyType::Obsolete(answer) => answer.to_string(),
        KeyType::NumDeclarative | KeyType::Declarative | KeyType::Query | KeyType::Auth => {
            REJECT.to_string()
        }
    }
}

/// Originator: check the peer's answer `response` to our offer `offered`.
/// Returns the negotiated value, or `None` when the key stays at its
/// default (`Reject`, `Irrelevant`, `NotUnderstood`).
pub fn accept_response(
    def: &KeyDef,
    offered: &str,
    response: &str,
) -> Result<Option<String>, NegotiationError> {
    if is_special(response) {
        return Ok(None);
    }
    let bad = || NegotiationError::NotAdmissible {
        key: def.name.to_string(),
        offered: offered.to_string(),
        value: response.to_string(),
    };
    let ok = match def.ty {
        // One of the offered values, and a single one.
        KeyType::List => !response.contains(',') && offered.split(',').any(|v| v == response),
        KeyType::BoolAnd | KeyType::BoolOr => match (parse_bool(offered), parse_bool(response)) {
            // AND: "No" offered forces "No"; OR: "Yes" offered forces "Yes".
            (Some(o), Some(r)) => {
                if def.ty == KeyType::BoolAnd {
                    o || !r
                } else {
                    !o || r
                }
            }
            _ => false,
        },
        KeyType::NumMin | KeyType::NumMax => {
            match (parse_number(offered), num_in_range(def, response)) {
                (Some(o), Some(r)) => {
                    if def.ty == KeyType::NumMin {
                        r <= o
                    } else {
                        r >= o
                    }
                }
                _ => false,
            }
        }
        // We never offer obsolete keys; any answer is harmless.
        KeyType::Obsolete(_) => true,
        KeyType::NumDeclarative | KeyType::Declarative | KeyType::Query | KeyType::Auth => false,
    };
    if ok {
        Ok(Some(response.to_string()))
    } else {
        Err(bad())
    }
}

/// What [`Negotiator::process`] extracted from one received text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processed {
    /// Answers to send back, in the order of the offers.
    pub answers: Vec<KeyValue>,
    /// Declarative keys (names, aliases, addresses, SessionType,
    /// TargetPortalGroupTag, X#NodeArchitecture), validated, for the caller.
    pub declarations: Vec<KeyValue>,
    /// Authentication items (CHAP_*, ...), for the Authenticator.
    pub auth: Vec<KeyValue>,
    /// The value of a SendTargets query (full-feature phase only).
    pub send_targets: Option<String>,
}

/// State of one negotiation (a login, or full-feature Text exchanges).
#[derive(Debug, Clone)]
pub struct Negotiator {
    role: Role,
    local: OperationalConfig,
    /// Acceptable AuthMethod values, in order of preference.
    auth_methods: Vec<String>,
    session_type: SessionType,
    leading: bool,
    phase: Phase,
    /// Our offers awaiting an answer.
    pending: BTreeMap<&'static str, String>,
    /// Keys we sent (offers, answers, declarations).
    sent: BTreeSet<String>,
    /// Keys the peer sent, with the first value.
    received: BTreeMap<String, String>,
    /// Negotiated values.
    results: BTreeMap<&'static str, String>,
    /// The peer's MaxRecvDataSegmentLength declaration.
    peer_mrdsl: Option<u32>,
    /// The MaxRecvDataSegmentLength we declared.
    our_mrdsl: Option<u32>,
}

impl Negotiator {
    /// A login negotiation for `role` with local preferences `local`.
    /// `leading`: no TSIH yet (LO keys are negotiated).
    pub fn new(
        role: Role,
        local: OperationalConfig,
        session_type: SessionType,
        leading: bool,
    ) -> Self {
        Negotiator {
            role,
            local,
            auth_methods: vec![NONE.to_string()],
            session_type,
            leading,
            phase: Phase::Login,
            pending: BTreeMap::new(),
            sent: BTreeSet::new(),
            received: BTreeMap::new(),
            results: BTreeMap::new(),
            peer_mrdsl: None,
            our_mrdsl: None,
        }
    }

    /// A full-feature-phase Text negotiation on a connection whose login
    /// gave `conn` (keeps the declared MaxRecvDataSegmentLength values).
    pub fn full_feature(
        role: Role,
        local: OperationalConfig,
        session_type: SessionType,
        conn: ConnectionParams,
    ) -> Self {
        let mut n = Negotiator::new(role, local, session_type, false);
        n.phase = Phase::FullFeature;
        n.our_mrdsl = Some(conn.max_recv_data_segment_length);
        n.peer_mrdsl = Some(conn.max_send_data_segment_length);
        n.results.insert(
            keys::HEADER_DIGEST,
            digest_str(conn.header_digest).to_string(),
        );
        n.results
            .insert(keys::DATA_DIGEST, digest_str(conn.data_digest).to_string());
        n
    }

    /// Set the acceptable AuthMethod values (in preference order).
    pub fn set_auth_methods(&mut self, methods: Vec<String>) {
        self.auth_methods = methods;
    }

    /// Change the session type (learned from the initiator's first PDU).
    pub fn set_session_type(&mut self, t: SessionType) {
        self.session_type = t;
    }

    /// The session type in force.
    pub fn session_type(&self) -> SessionType {
        self.session_type
    }

    /// Forget which keys were exchanged, keeping results: a new
    /// full-feature Text negotiation (each is a separate exchange, and
    /// MaxRecvDataSegmentLength may be re-declared).
    pub fn begin_exchange(&mut self) {
        self.pending.clear();
        self.sent.clear();
        self.received.clear();
    }

    fn local_value(&self, def: &KeyDef) -> Option<String> {
        if def.name == keys::AUTH_METHOD {
            return Some(self.auth_methods.join(","));
        }
        if let KeyType::Obsolete(a) = def.ty {
            return Some(a.to_string());
        }
        self.local
            .local_value(def.name)
            .or_else(|| def.default.map(str::to_string))
    }

    /// The value in force for `key`: negotiated, else the RFC default.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.results
            .get(key)
            .map(String::as_str)
            .or_else(|| lookup(key).and_then(|d| d.default))
    }

    /// Whether `key` was negotiated (not just defaulted).
    pub fn is_negotiated(&self, key: &str) -> bool {
        self.results.contains_key(key)
    }

    fn irrelevant(&self, def: &KeyDef) -> bool {
        (self.session_type == SessionType::Discovery && def.irrelevant_in_discovery)
            || (def.leading_only() && !self.leading && def.is_negotiated())
    }

    /// RFC 7143 §13.14: "Irrelevant when: ( InitialR2T=Yes and ImmediateData=No )".
    fn first_burst_irrelevant(&self) -> bool {
        self.value(keys::INITIAL_R2T) == Some(keys::YES)
            && self.value(keys::IMMEDIATE_DATA) == Some(keys::NO)
    }

    /// Record an offer (or declaration) of ours and return the pair to send.
    /// Offers of negotiated keys await an answer ([`Self::has_pending`]).
    pub fn offer(&mut self, def: &'static KeyDef, value: String) -> KeyValue {
        self.sent.insert(def.name.to_string());
        if def.is_negotiated() {
            self.pending.insert(def.name, value.clone());
        }
        if def.name == keys::MAX_RECV_DATA_SEGMENT_LENGTH {
            self.our_mrdsl = parse_number(&value).and_then(|n| u32::try_from(n).ok());
        }
        (def.name.to_string(), value)
    }

    /// Whether `key` was already sent by us.
    pub fn was_sent(&self, key: &str) -> bool {
        self.sent.contains(key)
    }

    /// Whether offers of ours still await an answer.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Declare our MaxRecvDataSegmentLength unless already done.
    pub fn declare_mrdsl(&mut self) -> Option<KeyValue> {
        if self.was_sent(keys::MAX_RECV_DATA_SEGMENT_LENGTH) {
            return None;
        }
        let def = lookup(keys::MAX_RECV_DATA_SEGMENT_LENGTH)?;
        let v = self
            .local
            .max_recv_data_segment_length
            .clamp(512, MAX_SEGMENT_VALUE);
        Some(self.offer(def, v.to_string()))
    }

    /// The initiator's operational-stage offers: the classic RFC 3720 set
    /// relevant to this session (digests and MaxRecvDataSegmentLength on
    /// every connection; the session keys on the leading connection of a
    /// normal session), plus any other key whose local value differs from
    /// the RFC default. Keys already exchanged are skipped.
    pub fn operational_offers(&mut self) -> Vec<KeyValue> {
        const CLASSIC: &[&str] = &[
            keys::HEADER_DIGEST,
            keys::DATA_DIGEST,
            keys::MAX_CONNECTIONS,
            keys::INITIAL_R2T,
            keys::IMMEDIATE_DATA,
            keys::MAX_BURST_LENGTH,
            keys::FIRST_BURST_LENGTH,
            keys::DEFAULT_TIME2WAIT,
            keys::DEFAULT_TIME2RETAIN,
            keys::MAX_OUTSTANDING_R2T,
            keys::DATA_PDU_IN_ORDER,
            keys::DATA_SEQUENCE_IN_ORDER,
            keys::ERROR_RECOVERY_LEVEL,
        ];
        let mut out = Vec::new();
        if let Some(kv) = self.declare_mrdsl() {
            out.push(kv);
        }
        for def in keys::KEYS {
            if !def.is_negotiated()
                || matches!(def.ty, KeyType::Obsolete(_))
                || def.usage == keys::Use::Security
                || !def.may_be_sent_by(self.role)
                || self.irrelevant(def)
                || self.sent.contains(def.name)
                || self.received.contains_key(def.name)
            {
                continue;
            }
            let Some(local) = self.local_value(def) else {
                continue;
            };
            let classic = CLASSIC.contains(&def.name);
            if classic || Some(local.as_str()) != def.default {
                out.push(self.offer(def, local));
            }
        }
        out
    }

    /// Keys the responder (target) should offer on its own before the login
    /// leaves the operational stage: every relevant key not yet exchanged
    /// whose RFC default is not acceptable to us, i.e. where answering the
    /// default would not give the default (e.g. our MaxBurstLength is below
    /// 262144, or we want ImmediateData=No).
    fn unsolicited_candidates(&self) -> Vec<(&'static KeyDef, String)> {
        let mut out = Vec::new();
        for def in keys::KEYS {
            if !def.is_negotiated()
                || matches!(def.ty, KeyType::Obsolete(_))
                || def.usage == keys::Use::Security
                || !def.may_be_sent_by(self.role)
                || self.irrelevant(def)
                || self.sent.contains(def.name)
                || self.received.contains_key(def.name)
            {
                continue;
            }
            let (Some(local), Some(default)) = (self.local_value(def), def.default) else {
                continue;
            };
            if answer_offer(def, default, &local) != default {
                out.push((def, local));
            }
        }
        out
    }

    /// Whether [`Self::unsolicited_offers`] would offer a negotiated key.
    pub fn needs_offers(&self) -> bool {
        !self.unsolicited_candidates().is_empty()
    }

    /// Offer every relevant key not yet exchanged whose RFC default is not
    /// acceptable to us (e.g. our MaxBurstLength is below 262144, or we
    /// want ImmediateData=No), plus our MaxRecvDataSegmentLength
    /// declaration if not yet sent. Used by the target before it leaves the
    /// operational stage.
    pub fn unsolicited_offers(&mut self) -> Vec<KeyValue> {
        let mut out = Vec::new();
        if let Some(kv) = self.declare_mrdsl() {
            out.push(kv);
        }
        for (def, local) in self.unsolicited_candidates() {
            out.push(self.offer(def, local));
        }
        out
    }

    /// Whether our offer of `key` still awaits an answer.
    pub fn is_pending(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    /// The negotiated value of `key`, if it was negotiated (`None` when it
    /// was never exchanged or was answered Reject/Irrelevant/NotUnderstood).
    pub fn negotiated(&self, key: &str) -> Option<&str> {
        self.results.get(key).map(String::as_str)
    }

    /// Process a complete received text: answers to our offers are checked
    /// and applied; the peer's offers are answered; declarations, auth items
    /// and SendTargets are handed back. Unknown keys get `NotUnderstood`.
    pub fn process(&mut self, received: &[KeyValue]) -> Result<Processed, NegotiationError> {
        let mut out = Processed::default();
        // FirstBurstLength offers are answered last: their relevance depends
        // on InitialR2T/ImmediateData, which may come later in the same text.
        let mut deferred_fbl: Option<(usize, String)> = None;
        for (k, v) in received {
            if !self.first_sight(k, v)? {
                continue;
            }
            let Some(def) = lookup(k) else {
                // RFC 7143 §6.2: "NotUnderstood" for keys we do not know
                // (including private X- and X# extension keys).
                if !is_special(v) {
                    out.answers.push((k.clone(), NOT_UNDERSTOOD.to_string()));
                    self.sent.insert(k.clone());
                }
                continue;
            };
            if !self.allowed_now(def, k, v, &mut out)? {
                continue;
            }
            match def.ty {
                KeyType::Auth => out.auth.push((k.clone(), v.clone())),
                KeyType::Query => out.send_targets = Some(v.clone()),
                KeyType::Declarative => {
                    self.check_declaration(def, v)?;
                    out.declarations.push((k.clone(), v.clone()));
                }
                KeyType::NumDeclarative => {
                    // Declarative: "the receiving party does not respond".
                    // Below 512 is illegal; above 2**24-1 is clamped (it is
                    // the peer's receive capability; sending less is safe).
                    let n = parse_number(v).filter(|&n| n >= 512).ok_or_else(|| {
                        NegotiationError::IllegalValue {
                            key: k.clone(),
                            value: v.clone(),
                        }
                    })?;
                    self.peer_mrdsl = Some(n.min(u64::from(MAX_SEGMENT_VALUE)) as u32);
                }
                _ => self.negotiate(def, k, v, &mut out, &mut deferred_fbl)?,
            }
        }
        if let Some((i, offered)) = deferred_fbl {
            out.answers[i].1 = if self.first_burst_irrelevant() {
                IRRELEVANT.to_string()
            } else {
                self.answer(
                    lookup(keys::FIRST_BURST_LENGTH).expect("in table"),
                    &offered,
                )
            };
        }
        Ok(out)
    }

    /// Records a received key; `Ok(false)` when there is nothing more to do
    /// with it (a repeated identical declaration, or a special value for a
    /// key we declared or already answered, e.g. a target answering
    /// InitiatorAlias=NotUnderstood). Duplicates are refused (RFC 7143 §6.2).
    fn first_sight(&mut self, k: &str, v: &str) -> Result<bool, NegotiationError> {
        let def = lookup(k);
        if let Some(first) = self.received.get(k) {
            let repeatable = def.is_some_and(KeyDef::repeatable);
            let same_declaration = def.is_some_and(|d| d.ty == KeyType::Declarative) && first == v;
            if !repeatable && !same_declaration {
                return Err(NegotiationError::Duplicate(k.to_string()));
            }
            if same_declaration {
                return Ok(false);
            }
        } else {
            self.received.insert(k.to_string(), v.to_string());
        }
        Ok(!(is_special(v) && self.sent.contains(k) && !self.pending.contains_key(k)))
    }

    /// Whether the peer may send `def` in this phase; a key out of its
    /// phase is answered Reject (an auth key there is an error).
    fn allowed_now(
        &self,
        def: &KeyDef,
        k: &str,
        v: &str,
        out: &mut Processed,
    ) -> Result<bool, NegotiationError> {
        let peer = self.role.peer();
        if !def.may_be_sent_by(peer) {
            return Err(NegotiationError::WrongSender(k.to_string(), peer));
        }
        let allowed = match self.phase {
            Phase::Login => def.allowed_in_login(),
            Phase::FullFeature => def.allowed_in_full_feature(),
        };
        if allowed {
            return Ok(true);
        }
        if def.ty == KeyType::Auth {
            return Err(NegotiationError::IllegalValue {
                key: k.to_string(),
                value: v.to_string(),
            });
        }
        out.answers.push((k.to_string(), REJECT.to_string()));
        Ok(false)
    }

    /// A negotiated key: the answer to our offer, or the peer's offer to
    /// answer (FirstBurstLength is answered last, see `process`).
    fn negotiate(
        &mut self,
        def: &'static KeyDef,
        k: &str,
        v: &str,
        out: &mut Processed,
        deferred_fbl: &mut Option<(usize, String)>,
    ) -> Result<(), NegotiationError> {
        if let Some(offered) = self.pending.remove(def.name) {
            // An answer to our offer.
            if let Some(r) = accept_response(def, &offered, v)? {
                self.results.insert(def.name, r);
            }
            return Ok(());
        }
        if is_special(v) {
            return Err(NegotiationError::UnsolicitedAnswer {
                key: k.to_string(),
                value: v.to_string(),
            });
        }
        if self.sent.contains(def.name) {
            // We already answered (or declared) this key.
            return Err(NegotiationError::Duplicate(k.to_string()));
        }
        let a = if self.irrelevant(def) {
            IRRELEVANT.to_string()
        } else if def.name == keys::FIRST_BURST_LENGTH {
            *deferred_fbl = Some((out.answers.len(), v.to_string()));
            String::new()
        } else {
            self.answer(def, v)
        };
        out.answers.push((k.to_string(), a));
        self.sent.insert(k.to_string());
        Ok(())
    }

    /// Our answer to the peer's offer of `offered`, recorded as the result
    /// unless it is a special value.
    fn answer(&mut self, def: &'static KeyDef, offered: &str) -> String {
        let local = self.local_value(def).unwrap_or_default();
        let a = answer_offer(def, offered, &local);
        if !is_special(&a) {
            self.results.insert(def.name, a.clone());
        }
        a
    }

    fn check_declaration(&self, def: &KeyDef, v: &str) -> Result<(), NegotiationError> {
        let ok = match def.name {
            keys::TARGET_PORTAL_GROUP_TAG => parse_number(v).is_some_and(|n| n <= 0xffff),
            keys::SESSION_TYPE => SessionType::parse(v).is_some(),
            keys::INITIATOR_NAME | keys::TARGET_NAME => !v.is_empty(),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(NegotiationError::IllegalValue {
                key: def.name.to_string(),
                value: v.to_string(),
            })
        }
    }

    /// The session-wide results (names are filled by the login layer).
    pub fn session_params(&self) -> SessionParams {
        let d = SessionParams::default();
        let num = |k: &str, dflt: u64| self.value(k).and_then(parse_number).unwrap_or(dflt);
        let boolean = |k: &str, dflt: bool| self.value(k).and_then(parse_bool).unwrap_or(dflt);
        let max_burst_length = num(keys::MAX_BURST_LENGTH, d.max_burst_length.into()) as u32;
        // RFC 7143 §13.14: "FirstBurstLength MUST NOT exceed MaxBurstLength."
        // Both sides clamp the same way, so they agree.
        let first_burst_length = (num(keys::FIRST_BURST_LENGTH, d.first_burst_length.into())
            as u32)
            .min(max_burst_length);
        SessionParams {
            session_type: self.session_type,
            max_connections: num(keys::MAX_CONNECTIONS, d.max_connections.into()) as u16,
            initial_r2t: boolean(keys::INITIAL_R2T, d.initial_r2t),
            immediate_data: boolean(keys::IMMEDIATE_DATA, d.immediate_data),
            max_burst_length,
            first_burst_length,
            default_time2wait: num(keys::DEFAULT_TIME2WAIT, d.default_time2wait.into()) as u16,
            default_time2retain: num(keys::DEFAULT_TIME2RETAIN, d.default_time2retain.into())
                as u16,
            max_outstanding_r2t: num(keys::MAX_OUTSTANDING_R2T, d.max_outstanding_r2t.into())
                as u16,
            data_pdu_in_order: boolean(keys::DATA_PDU_IN_ORDER, d.data_pdu_in_order),
            data_sequence_in_order: boolean(keys::DATA_SEQUENCE_IN_ORDER, d.data_sequence_in_order),
            error_recovery_level: num(keys::ERROR_RECOVERY_LEVEL, d.error_recovery_level.into())
                as u8,
            protocol_level: num(keys::ISCSI_PROTOCOL_LEVEL, d.protocol_level.into()) as u8,
            ..d
        }
    }

    /// The connection-only results.
    pub fn connection_params(&self) -> ConnectionParams {
        let d = ConnectionParams::default();
        let crc = |k: &str| self.value(k).and_then(Digest::parse) == Some(Digest::Crc32c);
        ConnectionParams {
            header_digest: crc(keys::HEADER_DIGEST),
            data_digest: crc(keys::DATA_DIGEST),
            max_recv_data_segment_length: self.our_mrdsl.unwrap_or(d.max_recv_data_segment_length),
            max_send_data_segment_length: self.peer_mrdsl.unwrap_or(d.max_send_data_segment_length),
        }
    }
}

fn digest_str(on: bool) -> &'static str {
    if on {
        Digest::Crc32c.as_str()
    } else {
        Digest::None.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(k: &str) -> &'static KeyDef {
        lookup(k).unwrap()
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn list_answers() {
        let d = def(keys::HEADER_DIGEST);
        assert_eq!(answer_offer(d, "CRC32C,None", "None,CRC32C"), "CRC32C");
        assert_eq!(answer_offer(d, "None,CRC32C", "CRC32C,None"), "None");
        assert_eq!(answer_offer(d, "CRC32C", "None"), "Reject");
        // Unknown values are ignored; None is only chosen when offered.
        assert_eq!(answer_offer(d, "MD5,None", "CRC32C,None"), "None");
        assert_eq!(answer_offer(d, "MD5", "CRC32C,None"), "Reject");
    }

    #[test]
    fn list_responses() {
        let d = def(keys::DATA_DIGEST);
        assert_eq!(
            accept_response(d, "CRC32C,None", "None"),
            Ok(Some("None".into()))
        );
        assert!(accept_response(d, "None", "CRC32C").is_err());
        assert!(accept_response(d, "CRC32C,None", "CRC32C,None").is_err());
        assert_eq!(accept_response(d, "CRC32C", "Reject"), Ok(None));
    }

    #[test]
    fn boolean_and_or() {
        let and = def(keys::IMMEDIATE_DATA);
        let or = def(keys::INITIAL_R2T);
        for (o, l) in [("Yes", "Yes"), ("Yes", "No"), ("No", "Yes"), ("No", "No")] {
            let (ob, lb) = (o == "Yes", l == "Yes");
            assert_eq!(answer_offer(and, o, l), bool_str(ob && lb));
            assert_eq!(answer_offer(or, o, l), bool_str(ob || lb));
        }
        assert_eq!(answer_offer(and, "yes", "Yes"), "Reject");
        // Originator side: AND with No offered cannot become Yes; OR with
        // Yes offered cannot become No.
        assert!(accept_response(and, "No", "Yes").is_err());
        assert_eq!(accept_response(and, "Yes", "No"), Ok(Some("No".into())));
        assert!(accept_response(or, "Yes", "No").is_err());
        assert_eq!(accept_response(or, "No", "Yes"), Ok(Some("Yes".into())));
        assert!(accept_response(or, "No", "Maybe").is_err());
    }

    #[test]
    fn numeric_min_max() {
        let min = def(keys::MAX_BURST_LENGTH);
        let max = def(keys::DEFAULT_TIME2WAIT);
        assert_eq!(answer_offer(min, "1048576", "262144"), "262144");
        assert_eq!(answer_offer(min, "4096", "262144"), "4096");
        assert_eq!(answer_offer(min, "0x1000", "262144"), "4096");
        assert_eq!(answer_offer(max, "0", "2"), "2");
        assert_eq!(answer_offer(max, "10", "2"), "10");
        // Out of range offers (RFC 7143 §13.13: 512 to 2**24-1) are rejected.
        assert_eq!(answer_offer(min, "511", "262144"), "Reject");
        assert_eq!(answer_offer(min, "16777216", "262144"), "Reject");
        assert_eq!(answer_offer(min, "lots", "262144"), "Reject");
        assert_eq!(answer_offer(max, "3601", "2"), "Reject");
        // Responses must respect the result function and range.
        assert_eq!(
            accept_response(min, "65536", "8192"),
            Ok(Some("8192".into()))
        );
        assert!(accept_response(min, "65536", "131072").is_err());
        assert!(accept_response(min, "65536", "100").is_err());
        assert!(accept_response(max, "2", "1").is_err());
        assert_eq!(accept_response(max, "2", "5"), Ok(Some("5".into())));
        assert_eq!(accept_response(min, "65536", "Irrelevant"), Ok(None));
    }

    #[test]
    fn obsolete_markers_are_rejected() {
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        let p = t
            .process(&[kv("OFMarker", "No"), kv("IFMarkInt", "2048~8192")])
            .unwrap();
        assert_eq!(
            p.answers,
            vec![kv("OFMarker", "Reject"), kv("IFMarkInt", "Reject")]
        );
    }

    #[test]
    fn unknown_keys_not_understood() {
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        let p = t
            .process(&[
                kv("X-com.example.foo", "1"),
                kv("FooBar", "x"),
                kv("X#Bar", "y"),
            ])
            .unwrap();
        assert_eq!(
            p.answers,
            vec![
                kv("X-com.example.foo", "NotUnderstood"),
                kv("FooBar", "NotUnderstood"),
                kv("X#Bar", "NotUnderstood")
            ]
        );
    }

    #[test]
    fn duplicates_are_errors() {
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        assert_eq!(
            t.process(&[kv("MaxBurstLength", "4096"), kv("MaxBurstLength", "8192")]),
            Err(NegotiationError::Duplicate("MaxBurstLength".into()))
        );
        // Across texts too.
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        t.process(&[kv("ImmediateData", "Yes")]).unwrap();
        assert!(t.process(&[kv("ImmediateData", "Yes")]).is_err());
        // A declarative repeated with the same value is tolerated, a
        // different one is not.
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        t.process(&[kv("InitiatorName", "iqn.a")]).unwrap();
        let p = t.process(&[kv("InitiatorName", "iqn.a")]).unwrap();
        assert!(p.declarations.is_empty());
        assert!(t.process(&[kv("InitiatorName", "iqn.b")]).is_err());
        // TargetAddress may repeat.
        let mut i = Negotiator::new(
            Role::Initiator,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        let p = i
            .process(&[
                kv("TargetAddress", "10.0.0.1:3260,1"),
                kv("TargetAddress", "10.0.0.2:3260,1"),
            ])
            .unwrap();
        assert_eq!(p.declarations.len(), 2);
    }

    #[test]
    fn irrelevant_in_discovery_and_non_leading() {
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Discovery,
            true,
        );
        let p = t
            .process(&[
                kv("MaxBurstLength", "4096"),
                kv("HeaderDigest", "None"),
                kv("DefaultTime2Wait", "0"),
            ])
            .unwrap();
        assert_eq!(
            p.answers,
            vec![
                kv("MaxBurstLength", "Irrelevant"),
                kv("HeaderDigest", "None"),
                kv("DefaultTime2Wait", "2")
            ]
        );
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            false,
        );
        let p = t
            .process(&[
                kv("MaxConnections", "4"),
                kv("MaxRecvDataSegmentLength", "4096"),
            ])
            .unwrap();
        assert_eq!(p.answers, vec![kv("MaxConnections", "Irrelevant")]);
        assert_eq!(t.connection_params().max_send_data_segment_length, 4096);
    }

    #[test]
    fn first_burst_irrelevant_with_initial_r2t_and_no_immediate_data() {
        let cfg = OperationalConfig {
            initial_r2t: true,
            ..OperationalConfig::default()
        };
        let mut t = Negotiator::new(Role::Target, cfg.clone(), SessionType::Normal, true);
        // FirstBurstLength comes first; its relevance depends on the keys after it.
        let p = t
            .process(&[
                kv("FirstBurstLength", "4096"),
                kv("InitialR2T", "Yes"),
                kv("ImmediateData", "No"),
            ])
            .unwrap();
        assert_eq!(p.answers[0], kv("FirstBurstLength", "Irrelevant"));
        let mut t = Negotiator::new(Role::Target, cfg, SessionType::Normal, true);
        let p = t
            .process(&[
                kv("FirstBurstLength", "4096"),
                kv("InitialR2T", "Yes"),
                kv("ImmediateData", "Yes"),
            ])
            .unwrap();
        assert_eq!(p.answers[0], kv("FirstBurstLength", "4096"));
    }

    #[test]
    fn first_burst_never_exceeds_max_burst() {
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        t.process(&[
            kv("MaxBurstLength", "8192"),
            kv("FirstBurstLength", "65536"),
        ])
        .unwrap();
        let s = t.session_params();
        assert_eq!(s.max_burst_length, 8192);
        assert_eq!(s.first_burst_length, 8192);
    }

    #[test]
    fn illegal_declarations() {
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        assert!(t.process(&[kv("MaxRecvDataSegmentLength", "100")]).is_err());
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        assert!(t.process(&[kv("SessionType", "Bogus")]).is_err());
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        // Huge declarations are clamped to 2**24-1.
        t.process(&[kv("MaxRecvDataSegmentLength", "99999999")])
            .unwrap();
        assert_eq!(
            t.connection_params().max_send_data_segment_length,
            MAX_SEGMENT_VALUE
        );
    }

    #[test]
    fn wrong_sender_and_phase() {
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        assert!(matches!(
            t.process(&[kv("TargetPortalGroupTag", "1")]),
            Err(NegotiationError::WrongSender(..))
        ));
        let mut t = Negotiator::new(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        let p = t.process(&[kv("SendTargets", "All")]).unwrap();
        assert_eq!(p.answers, vec![kv("SendTargets", "Reject")]);
        let mut t = Negotiator::full_feature(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Normal,
            ConnectionParams::default(),
        );
        let p = t
            .process(&[
                kv("SendTargets", "All"),
                kv("MaxBurstLength", "512"),
                kv("MaxRecvDataSegmentLength", "65536"),
            ])
            .unwrap();
        assert_eq!(p.send_targets.as_deref(), Some("All"));
        assert_eq!(p.answers, vec![kv("MaxBurstLength", "Reject")]);
        assert_eq!(t.connection_params().max_send_data_segment_length, 65536);
    }

    #[test]
    fn special_answers_to_our_declarations_are_ignored() {
        let mut i = Negotiator::new(
            Role::Initiator,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        let _ = i.operational_offers();
        let alias = lookup(keys::INITIATOR_ALIAS).unwrap();
        i.offer(alias, "host".into());
        let p = i
            .process(&[
                kv("InitiatorAlias", "NotUnderstood"),
                kv("MaxRecvDataSegmentLength", "Irrelevant"),
                kv("MaxBurstLength", "Reject"),
            ])
            .unwrap();
        assert!(p.answers.is_empty() && p.declarations.is_empty());
        assert_eq!(i.session_params().max_burst_length, 262_144);
        assert_eq!(i.connection_params().max_send_data_segment_length, 8192);
    }

    #[test]
    fn unsolicited_answers_are_errors() {
        let mut i = Negotiator::new(
            Role::Initiator,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        assert!(matches!(
            i.process(&[kv("MaxBurstLength", "Reject")]),
            Err(NegotiationError::UnsolicitedAnswer { .. })
        ));
    }

    #[test]
    fn offer_answer_round_trip_agrees() {
        let icfg = OperationalConfig::default();
        let tcfg = OperationalConfig {
            max_burst_length: 65536,
            first_burst_length: 131072,
            immediate_data: false,
            max_recv_data_segment_length: 65536,
            header_digest: vec![Digest::Crc32c, Digest::None],
            ..OperationalConfig::default()
        };
        let mut i = Negotiator::new(Role::Initiator, icfg, SessionType::Normal, true);
        let mut t = Negotiator::new(Role::Target, tcfg, SessionType::Normal, true);
        let offers = i.operational_offers();
        assert!(i.has_pending());
        let mut p = t.process(&offers).unwrap();
        p.answers.extend(t.unsolicited_offers());
        let back = i.process(&p.answers).unwrap();
        assert!(back.answers.is_empty(), "{:?}", back.answers);
        assert!(!i.has_pending());
        assert_eq!(i.session_params(), t.session_params());
        let s = i.session_params();
        assert_eq!(s.max_burst_length, 65536);
        assert_eq!(s.first_burst_length, 65536);
        assert!(!s.immediate_data);
        assert!(!s.initial_r2t);
        let (ic, tc) = (i.connection_params(), t.connection_params());
        assert_eq!(
            ic.max_send_data_segment_length,
            tc.max_recv_data_segment_length
        );
        assert_eq!(
            tc.max_send_data_segment_length,
            ic.max_recv_data_segment_length
        );
        assert_eq!(ic.max_send_data_segment_length, 65536);
        // The initiator preferred None first; the target accepted it.
        assert!(!ic.header_digest && !tc.header_digest);
    }

    #[test]
    fn target_offers_what_the_default_would_break() {
        let tcfg = OperationalConfig {
            max_burst_length: 65536,
            immediate_data: false,
            header_digest: vec![Digest::Crc32c],
            ..OperationalConfig::default()
        };
        let mut t = Negotiator::new(Role::Target, tcfg, SessionType::Normal, true);
        let offers = t.unsolicited_offers();
        let names: Vec<&str> = offers.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"MaxBurstLength"));
        assert!(names.contains(&"ImmediateData"));
        assert!(names.contains(&"HeaderDigest"));
        assert!(names.contains(&"MaxRecvDataSegmentLength"));
        assert!(!names.contains(&"DataDigest"));
        assert!(!names.contains(&"InitialR2T"));
        // The initiator answers them.
        let mut i = Negotiator::new(
            Role::Initiator,
            OperationalConfig::default(),
            SessionType::Normal,
            true,
        );
        let p = i.process(&offers).unwrap();
        t.process(&p.answers).unwrap();
        assert!(!t.has_pending());
        assert_eq!(i.session_params(), t.session_params());
        assert!(i.connection_params().header_digest);
        assert!(t.connection_params().header_digest);
    }
}
