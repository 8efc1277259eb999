//! SendTargets (RFC 7143 §13.3, Appendix C) and full-feature-phase Text
//! negotiation helpers (RFC 7143 §6.5 "Operational Parameter Negotiation
//! outside the Login Phase", §11.10/§11.11 Text Request/Response).
//!
//! Initiator: [`send_targets_text`] builds the request text,
//! [`parse_send_targets`] reads the response into [`DiscoveredTarget`]s.
//! Target: [`SendTargetsQuery::parse`] reads the query,
//! [`encode_send_targets`] writes the answer, and
//! [`process_text_request`] answers the other keys of a Text Request.

use bytes::Bytes;

use crate::text::keys::{SEND_TARGETS, TARGET_ADDRESS, TARGET_ALIAS, TARGET_NAME};
use crate::text::negotiate::{NegotiationError, Negotiator, Processed};
use crate::text::{encode_kv, KeyValue, TextError};

/// The well-known iSCSI port (RFC 7143 §13.8: "If the TCP port is not
/// specified, it is assumed to be the IANA-assigned default port for iSCSI").
pub const DEFAULT_PORT: u16 = 3260;

/// One target record of a SendTargets response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    pub name: String,
    pub alias: Option<String>,
    /// `(host:port, portal group tag)`; IPv6 hosts in brackets
    /// (`[2001:db8::1]:3260`). The port is always present (3260 if the
    /// target omitted it).
    pub addresses: Vec<(String, u16)>,
}

/// What a SendTargets key asks for (RFC 7143 §13.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTargetsQuery {
    /// `SendTargets=All`: every target (discovery sessions only).
    All,
    /// `SendTargets=<iSCSI-target-name>`: that target.
    Target(String),
    /// `SendTargets=` (empty): the session's own target.
    SessionTarget,
}

impl SendTargetsQuery {
    /// Parse the value of a SendTargets key.
    pub fn parse(v: &str) -> SendTargetsQuery {
        match v {
            "All" => SendTargetsQuery::All,
            "" => SendTargetsQuery::SessionTarget,
            name => SendTargetsQuery::Target(name.to_string()),
        }
    }

    /// Wire value.
    pub fn as_value(&self) -> &str {
        match self {
            SendTargetsQuery::All => "All",
            SendTargetsQuery::Target(n) => n,
            SendTargetsQuery::SessionTarget => "",
        }
    }
}

/// The data segment of a Text Request carrying `SendTargets=<query>`.
pub fn send_targets_text(query: &SendTargetsQuery) -> Bytes {
    encode_kv(&[(SEND_TARGETS, query.as_value())])
}

/// Split a TargetAddress value (`domainname[:port][,portal-group-tag]`,
/// RFC 7143 §13.8) into `host:port` (port defaulted to 3260) and the tag.
pub fn parse_target_address(v: &str) -> Result<(String, Option<u16>), TextError> {
    let bad = || TextError::InvalidValue {
        key: TARGET_ADDRESS.to_string(),
        value: v.to_string(),
    };
    let (addr, tag) = match v.rsplit_once(',') {
        Some((a, t)) => (a, Some(t.parse::<u16>().map_err(|_| bad())?)),
        None => (v, None),
    };
    // "[v6]:port", "[v6]", "host:port", "host".
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (format!("[{h}]"), port)
    } else {
        match addr.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (addr.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
        None => DEFAULT_PORT,
    };
    Ok((format!("{host}:{port}"), tag))
}

/// Read a SendTargets response (RFC 7143 Appendix C): each `TargetName`
/// starts a record, the `TargetAlias`/`TargetAddress` keys that follow
/// belong to it. A TargetAddress without a portal group tag gets tag 1.
/// Other keys are ignored.
pub fn parse_send_targets(pairs: &[KeyValue]) -> Result<Vec<DiscoveredTarget>, TextError> {
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            TARGET_NAME => {
                if v.is_empty() {
                    return Err(TextError::InvalidValue {
                        key: k.clone(),
                        value: v.clone(),
                    });
                }
                out.push(DiscoveredTarget {
                    name: v.clone(),
                    alias: None,
                    addresses: Vec::new(),
                })
            }
            TARGET_ADDRESS | TARGET_ALIAS => {
                let Some(cur) = out.last_mut() else {
                    return Err(TextError::InvalidValue {
                        key: k.clone(),
                        value: v.clone(),
                    });
                };
                if k == TARGET_ALIAS {
                    cur.alias = Some(v.clone());
                } else {
                    let (addr, tag) = parse_target_address(v)?;
                    cur.addresses.push((addr, tag.unwrap_or(1)));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Write a SendTargets response for `targets` (target side).
pub fn encode_send_targets(targets: &[DiscoveredTarget]) -> Vec<KeyValue> {
    let mut out = Vec::new();
    for t in targets {
        out.push((TARGET_NAME.to_string(), t.name.clone()));
        // TargetAlias is left out on purpose: RFC 7143 Appendix C defines
        // the response as TargetName keys each followed by TargetAddress
        // keys, and libiscsi (qemu's initiator) fails the whole exchange on
        // any other key, drops the connection and, on reconnect, sends the
        // same request again. The alias is declared at login instead.
        for (addr, tag) in &t.addresses {
            out.push((TARGET_ADDRESS.to_string(), format!("{addr},{tag}")));
        }
    }
    out
}

/// Answer the keys of one complete full-feature-phase Text Request
/// (target side) with a [`Negotiator::full_feature`] negotiator. The
/// SendTargets query, if any, is returned for the caller to answer with
/// [`encode_send_targets`]; `answers` holds the rest (e.g. `NotUnderstood`
/// for unknown keys, `Reject` for login-only keys). A re-declared
/// MaxRecvDataSegmentLength is applied to `neg.connection_params()`.
pub fn process_text_request(
    neg: &mut Negotiator,
    keys: &[KeyValue],
) -> Result<Processed, NegotiationError> {
    neg.begin_exchange();
    neg.process(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::params::{ConnectionParams, OperationalConfig, SessionType};
    use crate::text::negotiate::Role;
    use crate::text::parse_kv;

    fn kv(k: &str, v: &str) -> KeyValue {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn target_address_forms() {
        assert_eq!(
            parse_target_address("10.0.0.1:3261,2").unwrap(),
            ("10.0.0.1:3261".into(), Some(2))
        );
        assert_eq!(
            parse_target_address("host.example").unwrap(),
            ("host.example:3260".into(), None)
        );
        assert_eq!(
            parse_target_address("[2001:db8::1]:3262,7").unwrap(),
            ("[2001:db8::1]:3262".into(), Some(7))
        );
        assert_eq!(
            parse_target_address("[2001:db8::1],1").unwrap(),
            ("[2001:db8::1]:3260".into(), Some(1))
        );
        for bad in [
            "", "h:x", "h:0", "[::1", "[::1]x", "h,99999", ":3260", "[]:1",
        ] {
            assert!(parse_target_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn send_targets_round_trip() {
        let targets = vec![
            DiscoveredTarget {
                name: "iqn.2024-01.com.example:disk1".into(),
                alias: Some("disk one".into()),
                addresses: vec![("10.0.0.1:3260".into(), 1), ("[fd00::1]:3260".into(), 2)],
            },
            DiscoveredTarget {
                name: "iqn.2024-01.com.example:disk2".into(),
                alias: None,
                addresses: vec![("10.0.0.1:3260".into(), 1)],
            },
        ];
        let text = encode_kv(&encode_send_targets(&targets));
        // Only TargetName and TargetAddress go on the wire (libiscsi reads
        // nothing else), so the alias does not come back; a peer's alias is
        // still read when one is sent.
        let mut expected = targets.clone();
        expected[0].alias = None;
        assert!(!String::from_utf8_lossy(&text).contains("TargetAlias"));
        assert_eq!(
            parse_send_targets(&parse_kv(&text).unwrap()).unwrap(),
            expected
        );
        let with_alias = parse_kv(b"TargetName=iqn.x\0TargetAlias=a\0TargetAddress=h,2\0").unwrap();
        assert_eq!(
            parse_send_targets(&with_alias).unwrap()[0].alias.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn send_targets_response_errors_and_defaults() {
        assert!(parse_send_targets(&[kv("TargetAddress", "1.2.3.4")]).is_err());
        let t = parse_send_targets(&[kv("TargetName", "iqn.x"), kv("TargetAddress", "1.2.3.4")])
            .unwrap();
        assert_eq!(t[0].addresses, vec![("1.2.3.4:3260".to_string(), 1)]);
        assert!(parse_send_targets(&[kv("TargetName", "")]).is_err());
        // The target's answers to requests it cannot serve (target/tests/
        // text.rs) read as "no targets" on our side: an empty answer, a
        // NotUnderstood for a key.
        assert_eq!(parse_send_targets(&[]).unwrap(), vec![]);
        assert_eq!(
            parse_send_targets(&[kv("SendTargetsPlease", "NotUnderstood")]).unwrap(),
            vec![]
        );
    }

    #[test]
    fn request_text_and_query() {
        assert_eq!(
            &send_targets_text(&SendTargetsQuery::All)[..],
            b"SendTargets=All\0"
        );
        assert_eq!(SendTargetsQuery::parse("All"), SendTargetsQuery::All);
        assert_eq!(SendTargetsQuery::parse(""), SendTargetsQuery::SessionTarget);
        assert_eq!(
            SendTargetsQuery::parse("iqn.x"),
            SendTargetsQuery::Target("iqn.x".into())
        );
    }

    #[test]
    fn full_feature_text_request() {
        let mut neg = Negotiator::full_feature(
            Role::Target,
            OperationalConfig::default(),
            SessionType::Discovery,
            ConnectionParams::default(),
        );
        let p = process_text_request(
            &mut neg,
            &[
                kv("SendTargets", "All"),
                kv("X-foo", "1"),
                kv("InitialR2T", "No"),
            ],
        )
        .unwrap();
        assert_eq!(p.send_targets.as_deref(), Some("All"));
        assert_eq!(
            p.answers,
            vec![kv("X-foo", "NotUnderstood"), kv("InitialR2T", "Reject")]
        );
        // A second exchange may re-declare MaxRecvDataSegmentLength.
        process_text_request(&mut neg, &[kv("MaxRecvDataSegmentLength", "4096")]).unwrap();
        process_text_request(&mut neg, &[kv("MaxRecvDataSegmentLength", "8192")]).unwrap();
        assert_eq!(neg.connection_params().max_send_data_segment_length, 8192);
    }
}
