//! The declarative table of text keys: RFC 7143 §12 (security) and §13
//! (operational), plus RFC 7144 §4.1 `iSCSIProtocolLevel`.
//!
//! Each [`KeyDef`] says how a key is negotiated ([`KeyType`]), when it may
//! be used ([`Use`], the RFC's "Use:" line), who may send it ([`Senders`]),
//! its scope ([`Scope`]), its default and range, and when it is irrelevant.
//! [`crate::text::negotiate`] interprets the table for both roles.

/// How a key is negotiated (RFC 7143 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `<list-of-values>`: the responder picks the first offered value it
    /// supports (§6.2.1), or answers `Reject`.
    List,
    /// Boolean with result function AND (§6.2.2).
    BoolAnd,
    /// Boolean with result function OR (§6.2.2).
    BoolOr,
    /// Numerical, result function Minimum: the answer is at most the offer.
    NumMin,
    /// Numerical, result function Maximum: the answer is at least the offer.
    NumMax,
    /// Numerical declarative (each side states its own value; no answer),
    /// e.g. MaxRecvDataSegmentLength.
    NumDeclarative,
    /// Declarative text: names, aliases, addresses, SessionType; no answer.
    Declarative,
    /// SendTargets: a full-feature-phase query answered with target records.
    Query,
    /// An authentication item (CHAP_*, SRP_*, KRB_*), exchanged through an
    /// [`crate::login::auth::Authenticator`] in the security stage.
    Auth,
    /// A key obsoleted by RFC 7143 §13.25 (markers): always answered with
    /// the given constant.
    Obsolete(&'static str),
}

/// When a key may be sent (the "Use:" line of each §13 entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Security negotiation stage only (AuthMethod and authentication items).
    Security,
    /// IO: "Initialize only", any connection's login.
    LoginOnly,
    /// LO: "Leading only", the leading connection's login only (implies IO).
    LeadingOnly,
    /// ALL: login or full-feature phase.
    All,
    /// FFPO: full-feature phase only.
    FullFeatureOnly,
}

/// Who may send the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Senders {
    Initiator,
    Target,
    Both,
}

/// Scope of the negotiated value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// SW: session-wide.
    Session,
    /// CO: connection only.
    Connection,
}

/// One entry of the key table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDef {
    pub name: &'static str,
    pub ty: KeyType,
    pub usage: Use,
    pub senders: Senders,
    pub scope: Scope,
    /// RFC default (the value in force when the key is not negotiated).
    pub default: Option<&'static str>,
    /// Inclusive range of a numerical key.
    pub range: Option<(u64, u64)>,
    /// Values a list key may take (for validation of offers).
    pub values: &'static [&'static str],
    /// "Irrelevant when: SessionType=Discovery".
    pub irrelevant_in_discovery: bool,
    /// Where the key is defined, e.g. "RFC 7143 §13.13".
    pub section: &'static str,
}

impl KeyDef {
    /// LO keys are only negotiated on the leading connection of a session.
    pub fn leading_only(&self) -> bool {
        self.usage == Use::LeadingOnly
    }

    /// Whether `role` may send this key.
    pub fn may_be_sent_by(&self, role: crate::text::negotiate::Role) -> bool {
        use crate::text::negotiate::Role;
        matches!(
            (self.senders, role),
            (Senders::Both, _)
                | (Senders::Initiator, Role::Initiator)
                | (Senders::Target, Role::Target)
        )
    }

    /// Whether the key may appear during login (security or operational stage).
    pub fn allowed_in_login(&self) -> bool {
        self.usage != Use::FullFeatureOnly
    }

    /// Whether the key may appear in full-feature-phase Text negotiation.
    pub fn allowed_in_full_feature(&self) -> bool {
        matches!(self.usage, Use::All | Use::FullFeatureOnly)
    }

    /// Whether the key is negotiated (offer/answer), as opposed to declared,
    /// queried or used for authentication.
    pub fn is_negotiated(&self) -> bool {
        matches!(
            self.ty,
            KeyType::List
                | KeyType::BoolAnd
                | KeyType::BoolOr
                | KeyType::NumMin
                | KeyType::NumMax
                | KeyType::Obsolete(_)
        )
    }

    /// Whether the key may legitimately appear several times in one text
    /// (RFC 7143 §6.2: "...except for responses to specific keys that
    /// explicitly allow repeated key declarations (e.g., TargetAddress)").
    pub fn repeatable(&self) -> bool {
        matches!(self.name, TARGET_ADDRESS)
    }
}

pub const HEADER_DIGEST: &str = "HeaderDigest";
pub const DATA_DIGEST: &str = "DataDigest";
pub const MAX_CONNECTIONS: &str = "MaxConnections";
pub const SEND_TARGETS: &str = "SendTargets";
pub const TARGET_NAME: &str = "TargetName";
pub const INITIATOR_NAME: &str = "InitiatorName";
pub const TARGET_ALIAS: &str = "TargetAlias";
pub const INITIATOR_ALIAS: &str = "InitiatorAlias";
pub const TARGET_ADDRESS: &str = "TargetAddress";
pub const TARGET_PORTAL_GROUP_TAG: &str = "TargetPortalGroupTag";
pub const INITIAL_R2T: &str = "InitialR2T";
pub const IMMEDIATE_DATA: &str = "ImmediateData";
pub const MAX_RECV_DATA_SEGMENT_LENGTH: &str = "MaxRecvDataSegmentLength";
pub const MAX_BURST_LENGTH: &str = "MaxBurstLength";
pub const FIRST_BURST_LENGTH: &str = "FirstBurstLength";
pub const DEFAULT_TIME2WAIT: &str = "DefaultTime2Wait";
pub const DEFAULT_TIME2RETAIN: &str = "DefaultTime2Retain";
pub const MAX_OUTSTANDING_R2T: &str = "MaxOutstandingR2T";
pub const DATA_PDU_IN_ORDER: &str = "DataPDUInOrder";
pub const DATA_SEQUENCE_IN_ORDER: &str = "DataSequenceInOrder";
pub const ERROR_RECOVERY_LEVEL: &str = "ErrorRecoveryLevel";
pub const SESSION_TYPE: &str = "SessionType";
pub const TASK_REPORTING: &str = "TaskReporting";
pub const ISCSI_PROTOCOL_LEVEL: &str = "iSCSIProtocolLevel";
pub const NODE_ARCHITECTURE: &str = "X#NodeArchitecture";
pub const AUTH_METHOD: &str = "AuthMethod";

/// Special answer values (RFC 7143 §6.2).
pub const REJECT: &str = "Reject";
pub const IRRELEVANT: &str = "Irrelevant";
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
pub const NONE: &str = "None";
pub const YES: &str = "Yes";
pub const NO: &str = "No";

/// RFC 7143 §13.12-§13.14: `<numerical-value-512-to-(2**24-1)>`.
const SEGMENT_RANGE: (u64, u64) = (512, (1 << 24) - 1);

const fn key(
    name: &'static str,
    ty: KeyType,
    usage: Use,
    senders: Senders,
    scope: Scope,
    default: Option<&'static str>,
    section: &'static str,
) -> KeyDef {
    KeyDef {
        name,
        ty,
        usage,
        senders,
        scope,
        default,
        range: None,
        values: &[],
        irrelevant_in_discovery: false,
        section,
    }
}

const fn ranged(mut k: KeyDef, lo: u64, hi: u64) -> KeyDef {
    k.range = Some((lo, hi));
    k
}

const fn listed(mut k: KeyDef, values: &'static [&'static str]) -> KeyDef {
    k.values = values;
    k
}

const fn no_discovery(mut k: KeyDef) -> KeyDef {
    k.irrelevant_in_discovery = true;
    k
}

use KeyType as T;
use Scope::{Connection as CO, Session as SW};
use Senders::{Both, Initiator, Target};
use Use::{All, FullFeatureOnly as Ffpo, LeadingOnly as Lo, LoginOnly as Io, Security as Sec};

/// Every key this implementation knows.
pub static KEYS: &[KeyDef] = &[
    // RFC 7143 §13.1: "Use: IO; Senders: Initiator and target; Scope: CO;
    // HeaderDigest = <list-of-values>; DataDigest = <list-of-values>;
    // Default is None for both HeaderDigest and DataDigest."
    listed(
        key(
            HEADER_DIGEST,
            T::List,
            Io,
            Both,
            CO,
            Some(NONE),
            "RFC 7143 §13.1",
        ),
        &["CRC32C", NONE],
    ),
    listed(
        key(
            DATA_DIGEST,
            T::List,
            Io,
            Both,
            CO,
            Some(NONE),
            "RFC 7143 §13.1",
        ),
        &["CRC32C", NONE],
    ),
    // §13.2: "MaxConnections=<numerical-value-from-1-to-65535>; Default is 1;
    // Result function is Minimum." Irrelevant when SessionType=Discovery.
    no_discovery(ranged(
        key(
            MAX_CONNECTIONS,
            T::NumMin,
            Lo,
            Both,
            SW,
            Some("1"),
            "RFC 7143 §13.2",
        ),
        1,
        65535,
    )),
    // §13.3: "Use: FFPO; Senders: Initiator; Scope: SW".
    key(
        SEND_TARGETS,
        T::Query,
        Ffpo,
        Initiator,
        SW,
        None,
        "RFC 7143 §13.3",
    ),
    // §13.4: "Use: IO by initiator, FFPO by target -- only as response to a
    // SendTargets; Senders: Initiator and target; Scope: SW". Declarative.
    key(
        TARGET_NAME,
        T::Declarative,
        Io,
        Initiator,
        SW,
        None,
        "RFC 7143 §13.4",
    ),
    // §13.5: "Use: IO, Declarative; Senders: Initiator; Scope: SW".
    key(
        INITIATOR_NAME,
        T::Declarative,
        Io,
        Initiator,
        SW,
        None,
        "RFC 7143 §13.5",
    ),
    // §13.6/§13.7: "Use: ALL, Declarative, Any-Stage".
    key(
        TARGET_ALIAS,
        T::Declarative,
        All,
        Target,
        SW,
        None,
        "RFC 7143 §13.6",
    ),
    key(
        INITIATOR_ALIAS,
        T::Declarative,
        All,
        Initiator,
        SW,
        None,
        "RFC 7143 §13.7",
    ),
    // §13.8: "Use: ALL, Declarative; Senders: Target; Scope: SW".
    key(
        TARGET_ADDRESS,
        T::Declarative,
        All,
        Target,
        SW,
        None,
        "RFC 7143 §13.8",
    ),
    // §13.9: "Use: IO by target, Declarative, Any-Stage; Senders: Target;
    // TargetPortalGroupTag=<16-bit-binary-value>".
    ranged(
        key(
            TARGET_PORTAL_GROUP_TAG,
            T::Declarative,
            Io,
            Target,
            SW,
            None,
            "RFC 7143 §13.9",
        ),
        0,
        65535,
    ),
    // §13.10: "InitialR2T=<boolean-value> ... Default is Yes. Result function is OR."
    no_discovery(key(
        INITIAL_R2T,
        T::BoolOr,
        Lo,
        Both,
        SW,
        Some(YES),
        "RFC 7143 §13.10",
    )),
    // §13.11: "ImmediateData=<boolean-value> ... Default is Yes. Result function is AND."
    no_discovery(key(
        IMMEDIATE_DATA,
        T::BoolAnd,
        Lo,
        Both,
        SW,
        Some(YES),
        "RFC 7143 §13.11",
    )),
    // §13.12: "Use: ALL, Declarative; Scope: CO;
    // MaxRecvDataSegmentLength=<numerical-value-512-to-(2**24-1)>; Default is 8192 bytes."
    ranged(
        key(
            MAX_RECV_DATA_SEGMENT_LENGTH,
            T::NumDeclarative,
            All,
            Both,
            CO,
            Some("8192"),
            "RFC 7143 §13.12",
        ),
        SEGMENT_RANGE.0,
        SEGMENT_RANGE.1,
    ),
    // §13.13: "Default is 262144 (256 KB). Result function is Minimum."
    no_discovery(ranged(
        key(
            MAX_BURST_LENGTH,
            T::NumMin,
            Lo,
            Both,
            SW,
            Some("262144"),
            "RFC 7143 §13.13",
        ),
        SEGMENT_RANGE.0,
        SEGMENT_RANGE.1,
    )),
    // §13.14: "Irrelevant when: ( InitialR2T=Yes and ImmediateData=No );
    // Default is 65536 (64 KB). Result function is Minimum."
    no_discovery(ranged(
        key(
            FIRST_BURST_LENGTH,
            T::NumMin,
            Lo,
            Both,
            SW,
            Some("65536"),
            "RFC 7143 §13.14",
        ),
        SEGMENT_RANGE.0,
        SEGMENT_RANGE.1,
    )),
    // §13.15: "DefaultTime2Wait=<numerical-value-0-to-3600>; Default is 2.
    // Result function is Maximum."
    ranged(
        key(
            DEFAULT_TIME2WAIT,
            T::NumMax,
            Lo,
            Both,
            SW,
            Some("2"),
            "RFC 7143 §13.15",
        ),
        0,
        3600,
    ),
    // §13.16: "Default is 20. Result function is Minimum."
    ranged(
        key(
            DEFAULT_TIME2RETAIN,
            T::NumMin,
            Lo,
            Both,
            SW,
            Some("20"),
            "RFC 7143 §13.16",
        ),
        0,
        3600,
    ),
    // §13.17: "MaxOutstandingR2T=<numerical-value-from-1-to-65535>; Default is 1.
    // Result function is Minimum."
    no_discovery(ranged(
        key(
            MAX_OUTSTANDING_R2T,
            T::NumMin,
            Lo,
            Both,
            SW,
            Some("1"),
            "RFC 7143 §13.17",
        ),
        1,
        65535,
    )),
    // §13.18/§13.19: "Default is Yes. Result function is OR."
    no_discovery(key(
        DATA_PDU_IN_ORDER,
        T::BoolOr,
        Lo,
        Both,
        SW,
        Some(YES),
        "RFC 7143 §13.18",
    )),
    no_discovery(key(
        DATA_SEQUENCE_IN_ORDER,
        T::BoolOr,
        Lo,
        Both,
        SW,
        Some(YES),
        "RFC 7143 §13.19",
    )),
    // §13.20: "ErrorRecoveryLevel=<numerical-value-0-to-2>; Default is 0.
    // Result function is Minimum."
    ranged(
        key(
            ERROR_RECOVERY_LEVEL,
            T::NumMin,
            Lo,
            Both,
            SW,
            Some("0"),
            "RFC 7143 §13.20",
        ),
        0,
        2,
    ),
    // §13.21: "Use: LO, Declarative; Senders: Initiator; SessionType=
    // <Discovery|Normal>; Default is Normal."
    listed(
        key(
            SESSION_TYPE,
            T::Declarative,
            Lo,
            Initiator,
            SW,
            Some("Normal"),
            "RFC 7143 §13.21",
        ),
        &["Discovery", "Normal"],
    ),
    // §13.23: "TaskReporting=<list-of-values>; Default is RFC3720."
    no_discovery(listed(
        key(
            TASK_REPORTING,
            T::List,
            Lo,
            Both,
            SW,
            Some("RFC3720"),
            "RFC 7143 §13.23",
        ),
        &["RFC3720", "ResponseFence", "FastAbort"],
    )),
    // RFC 7144 §4.1: "iSCSIProtocolLevel=<numerical-value-from-0-to-31>;
    // Default is 1; Result function is Minimum."
    no_discovery(ranged(
        key(
            ISCSI_PROTOCOL_LEVEL,
            T::NumMin,
            Lo,
            Both,
            SW,
            Some("1"),
            "RFC 7144 §4.1",
        ),
        0,
        31,
    )),
    // §13.25: "When an IFMarker or OFMarker key is received, a compliant
    // iSCSI implementation SHOULD respond with the constant "Reject" value
    // ... when an IFMarkInt or OFMarkInt key is received, a compliant iSCSI
    // implementation MUST respond with the constant "Reject" value."
    key(
        "OFMarker",
        T::Obsolete(REJECT),
        Io,
        Both,
        CO,
        None,
        "RFC 7143 §13.25",
    ),
    key(
        "IFMarker",
        T::Obsolete(REJECT),
        Io,
        Both,
        CO,
        None,
        "RFC 7143 §13.25",
    ),
    key(
        "OFMarkInt",
        T::Obsolete(REJECT),
        Io,
        Both,
        CO,
        None,
        "RFC 7143 §13.25",
    ),
    key(
        "IFMarkInt",
        T::Obsolete(REJECT),
        Io,
        Both,
        CO,
        None,
        "RFC 7143 §13.25",
    ),
    // §13.26: "Use: LO, Declarative; Senders: Initiator and target".
    key(
        NODE_ARCHITECTURE,
        T::Declarative,
        Lo,
        Both,
        SW,
        None,
        "RFC 7143 §13.26",
    ),
    // §12: "AuthMethod: Use: During Login - Security Negotiation; Senders:
    // Initiator and target; Scope: connection; AuthMethod = <list-of-values>".
    // Default None (§12: absence means no authentication is required).
    listed(
        key(
            AUTH_METHOD,
            T::List,
            Sec,
            Both,
            CO,
            Some(NONE),
            "RFC 7143 §12",
        ),
        &["CHAP", "SRP", "KRB5", "SPKM1", "SPKM2", NONE],
    ),
    // §12.1.3 CHAP, §12.1.2 SRP, §12.1.1 Kerberos items.
    key("CHAP_A", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.3"),
    key("CHAP_I", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.3"),
    key("CHAP_C", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.3"),
    key("CHAP_N", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.3"),
    key("CHAP_R", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.3"),
    key("SRP_U", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.2"),
    key(
        "SRP_GROUP",
        T::Auth,
        Sec,
        Both,
        CO,
        None,
        "RFC 7143 §12.1.2",
    ),
    key("SRP_A", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.2"),
    key("SRP_B", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.2"),
    key("SRP_M", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.2"),
    key("SRP_HM", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.2"),
    key("SRP_s", T::Auth, Sec, Both, CO, None, "RFC 7143 §12.1.2"),
    key(
        "TargetAuth",
        T::Auth,
        Sec,
        Both,
        CO,
        None,
        "RFC 7143 §12.1.2",
    ),
    key(
        "KRB_AP_REQ",
        T::Auth,
        Sec,
        Both,
        CO,
        None,
        "RFC 7143 §12.1.1",
    ),
    key(
        "KRB_AP_REP",
        T::Auth,
        Sec,
        Both,
        CO,
        None,
        "RFC 7143 §12.1.1",
    ),
];

/// The table entry of `name` (case-sensitive, RFC 7143 §6.1).
pub fn lookup(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

/// Whether `name` is an authentication item (passed to the Authenticator).
pub fn is_auth_key(name: &str) -> bool {
    lookup(name).is_some_and(|k| k.ty == KeyType::Auth)
}

/// Parse a numerical value (RFC 7143 §6.1 decimal-constant or hex-constant).
/// Leading zeros are accepted; signs and empty strings are not.
pub fn parse_number(v: &str) -> Option<u64> {
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Parse a boolean-value (`Yes` or `No`, case-sensitive).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        YES => Some(true),
        NO => Some(false),
        _ => None,
    }
}

/// The wire form of a boolean.
pub fn bool_str(b: bool) -> &'static str {
    if b {
        YES
    } else {
        NO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rfc7143_section13_key_is_present() {
        for name in [
            HEADER_DIGEST,
            DATA_DIGEST,
            MAX_CONNECTIONS,
            SEND_TARGETS,
            TARGET_NAME,
            INITIATOR_NAME,
            TARGET_ALIAS,
            INITIATOR_ALIAS,
            TARGET_ADDRESS,
            TARGET_PORTAL_GROUP_TAG,
            INITIAL_R2T,
            IMMEDIATE_DATA,
            MAX_RECV_DATA_SEGMENT_LENGTH,
            MAX_BURST_LENGTH,
            FIRST_BURST_LENGTH,
            DEFAULT_TIME2WAIT,
            DEFAULT_TIME2RETAIN,
            MAX_OUTSTANDING_R2T,
            DATA_PDU_IN_ORDER,
            DATA_SEQUENCE_IN_ORDER,
            ERROR_RECOVERY_LEVEL,
            SESSION_TYPE,
            TASK_REPORTING,
            ISCSI_PROTOCOL_LEVEL,
            "OFMarker",
            "IFMarker",
            "OFMarkInt",
            "IFMarkInt",
            NODE_ARCHITECTURE,
            AUTH_METHOD,
            "CHAP_A",
            "CHAP_R",
        ] {
            assert!(lookup(name).is_some(), "{name} missing");
        }
        assert!(lookup("headerdigest").is_none(), "keys are case-sensitive");
    }

    #[test]
    fn table_is_consistent() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(crate::text::is_valid_key(k.name), "{}", k.name);
            assert!(
                KEYS[..i].iter().all(|o| o.name != k.name),
                "duplicate {}",
                k.name
            );
            let numeric = matches!(
                k.ty,
                KeyType::NumMin | KeyType::NumMax | KeyType::NumDeclarative
            );
            assert_eq!(
                numeric,
                k.range.is_some() && k.name != TARGET_PORTAL_GROUP_TAG,
                "{}",
                k.name
            );
            if let (Some((lo, hi)), Some(d)) = (k.range, k.default) {
                let d = parse_number(d).unwrap();
                assert!(lo <= d && d <= hi, "{} default out of range", k.name);
            }
            if k.ty == KeyType::List {
                assert!(k.values.contains(&k.default.unwrap()), "{}", k.name);
            }
        }
    }

    #[test]
    fn rfc_result_functions() {
        // The easy-to-confuse booleans (RFC 7143 §13.10, §13.11, §13.18, §13.19).
        assert_eq!(lookup(INITIAL_R2T).unwrap().ty, KeyType::BoolOr);
        assert_eq!(lookup(IMMEDIATE_DATA).unwrap().ty, KeyType::BoolAnd);
        assert_eq!(lookup(DATA_PDU_IN_ORDER).unwrap().ty, KeyType::BoolOr);
        assert_eq!(lookup(DATA_SEQUENCE_IN_ORDER).unwrap().ty, KeyType::BoolOr);
        assert_eq!(lookup(DEFAULT_TIME2WAIT).unwrap().ty, KeyType::NumMax);
        assert_eq!(lookup(DEFAULT_TIME2RETAIN).unwrap().ty, KeyType::NumMin);
        assert!(lookup(MAX_BURST_LENGTH).unwrap().leading_only());
        assert!(!lookup(HEADER_DIGEST).unwrap().leading_only());
        assert!(lookup(MAX_RECV_DATA_SEGMENT_LENGTH)
            .unwrap()
            .allowed_in_full_feature());
        assert!(!lookup(SEND_TARGETS).unwrap().allowed_in_login());
        assert!(is_auth_key("CHAP_C"));
        assert!(!is_auth_key(AUTH_METHOD));
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(parse_number("8192"), Some(8192));
        assert_eq!(parse_number("0x2000"), Some(8192));
        assert_eq!(parse_number("0X2000"), Some(8192));
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("1e3"), None);
        assert_eq!(parse_number("99999999999999999999999"), None);
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("No"), Some(false));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(bool_str(true), "Yes");
    }
}
