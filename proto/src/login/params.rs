//! Negotiated parameters (RFC 7143 §13) and the local configuration each
//! side negotiates from.
//!
//! [`SessionParams`] and [`ConnectionParams`] hold results; their `Default`
//! is the RFC default of every key (what applies when nothing is
//! negotiated). [`OperationalConfig`] is what one side proposes (initiator)
//! or accepts at most (target).

use crate::text::keys::{self, bool_str};

/// SessionType (RFC 7143 §13.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionType {
    /// Only SendTargets text requests and logout are allowed.
    Discovery,
    /// Full SCSI service. The RFC default.
    #[default]
    Normal,
}

impl SessionType {
    /// Wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Discovery => "Discovery",
            SessionType::Normal => "Normal",
        }
    }

    /// Parse a wire value (case-sensitive).
    pub fn parse(v: &str) -> Option<SessionType> {
        match v {
            "Discovery" => Some(SessionType::Discovery),
            "Normal" => Some(SessionType::Normal),
            _ => None,
        }
    }
}

/// A digest algorithm (RFC 7143 §13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    None,
    Crc32c,
}

impl Digest {
    /// Wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Digest::None => "None",
            Digest::Crc32c => "CRC32C",
        }
    }

    /// Parse a wire value.
    pub fn parse(v: &str) -> Option<Digest> {
        match v {
            "None" => Some(Digest::None),
            "CRC32C" => Some(Digest::Crc32c),
            _ => None,
        }
    }
}

/// Session-wide parameters after login (RFC 7143 §13, scope SW).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub initiator_name: String,
    /// None in a discovery session that did not name a target.
    pub target_name: Option<String>,
    pub initiator_alias: Option<String>,
    pub target_alias: Option<String>,
    pub target_portal_group_tag: Option<u16>,
    pub session_type: SessionType,
    /// MaxConnections (§13.2), default 1.
    pub max_connections: u16,
    /// InitialR2T (§13.10), default Yes.
    pub initial_r2t: bool,
    /// ImmediateData (§13.11), default Yes.
    pub immediate_data: bool,
    /// MaxBurstLength (§13.13), default 262144.
    pub max_burst_length: u32,
    /// FirstBurstLength (§13.14), default 65536; never above MaxBurstLength.
    pub first_burst_length: u32,
    /// DefaultTime2Wait in seconds (§13.15), default 2.
    pub default_time2wait: u16,
    /// DefaultTime2Retain in seconds (§13.16), default 20.
    pub default_time2retain: u16,
    /// MaxOutstandingR2T (§13.17), default 1.
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder (§13.18), default Yes.
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder (§13.19), default Yes.
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel (§13.20), default 0.
    pub error_recovery_level: u8,
    /// iSCSIProtocolLevel (RFC 7144 §4.1), default 1.
    pub protocol_level: u8,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            initiator_name: String::new(),
            target_name: None,
            initiator_alias: None,
            target_alias: None,
            target_portal_group_tag: None,
            session_type: SessionType::Normal,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            protocol_level: 1,
        }
    }
}

/// Connection-only parameters after login (RFC 7143 §13, scope CO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionParams {
    /// HeaderDigest=CRC32C was negotiated.
    pub header_digest: bool,
    /// DataDigest=CRC32C was negotiated.
    pub data_digest: bool,
    /// What WE declared: the limit on data segments we receive.
    pub max_recv_data_segment_length: u32,
    /// What the PEER declared: the limit on data segments we send.
    pub max_send_data_segment_length: u32,
}

impl Default for ConnectionParams {
    /// RFC 7143 §13.1 digests None; §13.12 MaxRecvDataSegmentLength 8192.
    fn default() -> Self {
        ConnectionParams {
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
            max_send_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
        }
    }
}

impl ConnectionParams {
    /// The digests to use on this connection once in the full-feature phase.
    pub fn digests(&self) -> crate::pdu::DigestConfig {
        crate::pdu::DigestConfig {
            header: self.header_digest,
            data: self.data_digest,
        }
    }
}

/// RFC 7143 §13.12 default, also the limit on login PDUs' data segments
/// before anything is declared.
pub const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;

/// Largest value of MaxRecvDataSegmentLength/MaxBurstLength/FirstBurstLength:
/// `2**24 - 1` (RFC 7143 §13.12-§13.14).
pub const MAX_SEGMENT_VALUE: u32 = (1 << 24) - 1;

/// What one side proposes (initiator) or accepts at most (target) for the
/// operational keys. Booleans are this side's preference; the RFC result
/// functions (AND/OR) combine them with the peer's. Numbers are this side's
/// limit (Minimum keys) or wish (Maximum keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationalConfig {
    /// Acceptable HeaderDigest values, in order of preference.
    pub header_digest: Vec<Digest>,
    /// Acceptable DataDigest values, in order of preference.
    pub data_digest: Vec<Digest>,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// Declared to the peer: the largest data segment we accept.
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl Default for OperationalConfig {
    /// High-performance proposals that every RFC 7143 peer supports:
    /// unsolicited data allowed (InitialR2T=No, ImmediateData=Yes), 1 MiB
    /// bursts, 256 KiB first burst and data segments, up to 8 connections,
    /// digests off unless the peer asks (None preferred, CRC32C accepted),
    /// ErrorRecoveryLevel 0, one outstanding R2T, in-order data.
    fn default() -> Self {
        OperationalConfig {
            header_digest: vec![Digest::None, Digest::Crc32c],
            data_digest: vec![Digest::None, Digest::Crc32c],
            max_connections: 8,
            initial_r2t: false,
            immediate_data: true,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

impl OperationalConfig {
    /// Require CRC32C header and data digests (offer/accept only CRC32C).
    pub fn with_digests_required(mut self) -> Self {
        self.header_digest = vec![Digest::Crc32c];
        self.data_digest = vec![Digest::Crc32c];
        self
    }

    /// This side's value for a negotiated or declared key, in wire form
    /// (a list for list keys), or `None` for keys it does not configure.
    pub fn local_value(&self, key: &str) -> Option<String> {
        fn list(v: &[Digest]) -> String {
            v.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(",")
        }
        Some(match key {
            keys::HEADER_DIGEST => list(&self.header_digest),
            keys::DATA_DIGEST => list(&self.data_digest),
            keys::MAX_CONNECTIONS => self.max_connections.to_string(),
            keys::INITIAL_R2T => bool_str(self.initial_r2t).to_string(),
            keys::IMMEDIATE_DATA => bool_str(self.immediate_data).to_string(),
            keys::MAX_RECV_DATA_SEGMENT_LENGTH => self.max_recv_data_segment_length.to_string(),
            keys::MAX_BURST_LENGTH => self.max_burst_length.to_string(),
            keys::FIRST_BURST_LENGTH => self.first_burst_length.to_string(),
            keys::DEFAULT_TIME2WAIT => self.default_time2wait.to_string(),
            keys::DEFAULT_TIME2RETAIN => self.default_time2retain.to_string(),
            keys::MAX_OUTSTANDING_R2T => self.max_outstanding_r2t.to_string(),
            keys::DATA_PDU_IN_ORDER => bool_str(self.data_pdu_in_order).to_string(),
            keys::DATA_SEQUENCE_IN_ORDER => bool_str(self.data_sequence_in_order).to_string(),
            keys::ERROR_RECOVERY_LEVEL => self.error_recovery_level.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::keys::{lookup, parse_bool, parse_number, KeyType};

    #[test]
    fn defaults_match_the_key_table() {
        let s = SessionParams::default();
        let num = |k: &str| parse_number(lookup(k).unwrap().default.unwrap()).unwrap();
        let boolean = |k: &str| parse_bool(lookup(k).unwrap().default.unwrap()).unwrap();
        assert_eq!(u64::from(s.max_connections), num(keys::MAX_CONNECTIONS));
        assert_eq!(u64::from(s.max_burst_length), num(keys::MAX_BURST_LENGTH));
        assert_eq!(
            u64::from(s.first_burst_length),
            num(keys::FIRST_BURST_LENGTH)
        );
        assert_eq!(u64::from(s.default_time2wait), num(keys::DEFAULT_TIME2WAIT));
        assert_eq!(
            u64::from(s.default_time2retain),
            num(keys::DEFAULT_TIME2RETAIN)
        );
        assert_eq!(
            u64::from(s.max_outstanding_r2t),
            num(keys::MAX_OUTSTANDING_R2T)
        );
        assert_eq!(
            u64::from(s.error_recovery_level),
            num(keys::ERROR_RECOVERY_LEVEL)
        );
        assert_eq!(u64::from(s.protocol_level), num(keys::ISCSI_PROTOCOL_LEVEL));
        assert_eq!(s.initial_r2t, boolean(keys::INITIAL_R2T));
        assert_eq!(s.immediate_data, boolean(keys::IMMEDIATE_DATA));
        assert_eq!(s.data_pdu_in_order, boolean(keys::DATA_PDU_IN_ORDER));
        assert_eq!(
            s.data_sequence_in_order,
            boolean(keys::DATA_SEQUENCE_IN_ORDER)
        );
        let c = ConnectionParams::default();
        assert_eq!(
            u64::from(c.max_recv_data_segment_length),
            num(keys::MAX_RECV_DATA_SEGMENT_LENGTH)
        );
        assert!(!c.header_digest && !c.data_digest);
    }

    #[test]
    fn local_values_are_in_range() {
        let cfg = OperationalConfig::default();
        for k in crate::text::keys::KEYS {
            let Some(v) = cfg.local_value(k.name) else {
                continue;
            };
            if let Some((lo, hi)) = k.range {
                let n = parse_number(&v).unwrap();
                assert!(lo <= n && n <= hi, "{} = {v}", k.name);
            }
            if matches!(k.ty, KeyType::BoolAnd | KeyType::BoolOr) {
                assert!(parse_bool(&v).is_some());
            }
        }
        assert_eq!(cfg.local_value(keys::HEADER_DIGEST).unwrap(), "None,CRC32C");
        assert_eq!(
            cfg.with_digests_required()
                .local_value(keys::DATA_DIGEST)
                .unwrap(),
            "CRC32C"
        );
        assert_eq!(
            SessionType::parse("Discovery"),
            Some(SessionType::Discovery)
        );
        assert_eq!(SessionType::parse("discovery"), None);
        assert_eq!(Digest::parse(Digest::Crc32c.as_str()), Some(Digest::Crc32c));
    }
}
