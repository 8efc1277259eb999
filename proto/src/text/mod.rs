//! Text key=value segments (RFC 7143 §6.1) and their negotiation (§6.2, §13).
//!
//! Login and Text PDUs carry a data segment of `key=value` pairs, each
//! followed by one NUL byte. A long text may be split over several PDUs with
//! the C (continue) bit; the pieces form one "logical text data segment"
//! (LTDS) that is only parsed once complete ([`TextAccumulator`]).
//!
//! - [`parse_kv`] / [`encode_kv`]: the wire format (parsing uses `nom`).
//! - [`split_text`]: cut an encoded text into data segments for C-bit
//!   continuation.
//! - [`keys`]: the declarative table of every RFC 7143 §13 key.
//! - [`negotiate`]: the negotiation rules of §6.2 used by both roles.
//! - [`discovery`]: SendTargets (§13.3, Appendix C) and full-feature-phase
//!   Text negotiation helpers.
//!
//! Deliberate leniency (receivers only; we always emit the strict form):
//! - extra NUL bytes between or after pairs are skipped (some peers pad);
//! - a final pair without its NUL terminator is accepted.

pub mod discovery;
pub mod keys;
pub mod negotiate;

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::{take_till, take_while};
use nom::IResult;
use thiserror::Error;

pub use crate::login::auth::KeyValue;

/// RFC 7143 §6.1: "A standard-label MUST begin with a capital letter and
/// must not exceed 63 characters."
pub const MAX_KEY_LEN: usize = 63;

/// RFC 7143 §6.1: "If not otherwise specified, the maximum length of a
/// simple-value (not its encoded representation) is 255 bytes, not including
/// the delimiter (comma or zero byte)."
pub const MAX_VALUE_LEN: usize = 255;

/// Largest encoded binary value we accept (hex `0x` or base64 `0b`
/// encodings, used by CHAP/SRP/KRB5 items): 8192 bytes hex-encoded plus the
/// prefix. Enough for every authentication method registered for iSCSI.
pub const MAX_BINARY_VALUE_LEN: usize = 2 + 2 * 8192;

/// RFC 7143 §6.1: "Any iSCSI target or initiator MUST support receiving at
/// least 8192 bytes of key=value data in a negotiation sequence. When
/// proposing or accepting authentication methods that explicitly require
/// support for very long authentication items, the initiator and target
/// MUST support receiving at least 64 kilobytes of key=value data."
/// This is the default bound of a [`TextAccumulator`].
pub const DEFAULT_MAX_TEXT_LEN: usize = 64 * 1024;

/// Errors in a text data segment.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TextError {
    /// A pair without `=`.
    #[error("text pair at byte {offset} has no '=' separator")]
    MissingSeparator { offset: usize },
    /// Empty key name (`=value`).
    #[error("empty key name at byte {offset}")]
    EmptyKey { offset: usize },
    /// Key longer than 63 bytes.
    #[error("key name of {len} bytes exceeds the 63-byte limit")]
    KeyTooLong { len: usize },
    /// Key with a character outside the RFC 7143 §6.1 standard-label set.
    #[error("invalid key name {0:?}")]
    InvalidKey(String),
    /// Value longer than the §6.1 limit.
    #[error("value of key {key} is {len} bytes, the limit is {max}")]
    ValueTooLong { key: String, len: usize, max: usize },
    /// Key or value not valid UTF-8.
    #[error("key or value at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: usize },
    /// A value that does not have the syntax its key requires.
    #[error("invalid value {key}={value}")]
    InvalidValue { key: String, value: String },
    /// A continued text (C bit) grew beyond the configured bound.
    #[error("text of {len} bytes exceeds the {max}-byte limit")]
    TooLong { len: usize, max: usize },
}

/// One raw `key=value` item (without its NUL).
fn raw_pair(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_till(|b| b == 0)(input)
}

/// Skip NUL bytes (one is the terminator; more are tolerated padding).
fn nuls(input: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while(|b| b == 0)(input)
}

/// Whether `key` is a valid key name: RFC 7143 §6.1 standard-label
/// (`[A-Z][A-Za-z0-9.\-+@_]*`), or a private/public extension key
/// (§13.22: `X-` followed by a reversed domain name, or `X#` + an IANA
/// registered string), at most 63 bytes.
///
/// A lower-case first letter is tolerated: RFC 7144 §4.1 itself defines
/// `iSCSIProtocolLevel`.
pub fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > MAX_KEY_LEN || !b[0].is_ascii_alphabetic() {
        return false;
    }
    let rest = if b.starts_with(b"X#") {
        &b[2..]
    } else {
        &b[1..]
    };
    rest.iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_'))
}

/// Whether a value uses the binary encodings of §6.1 (`0x…` hex-constant or
/// `0b…` base64-constant), which may be longer than 255 bytes when encoded.
fn is_binary_encoded(v: &[u8]) -> bool {
    v.len() > 2 && v[0] == b'0' && matches!(v[1], b'x' | b'X' | b'b' | b'B')
}

/// Parse a complete text data segment into its `key=value` pairs, in wire
/// order. Duplicates are kept: rejecting them is negotiation's job
/// ([`negotiate`]), since some keys (TargetName, TargetAddress in a
/// SendTargets response) legitimately repeat.
///
/// Never panics; nothing is allocated beyond the input's size.
pub fn parse_kv(data: &[u8]) -> Result<Vec<KeyValue>, TextError> {
    let mut out = Vec::new();
    let mut rest = data;
    // `nuls`/`raw_pair` never fail (they accept empty matches).
    while let Ok((r, _)) = nuls(rest) {
        if r.is_empty() {
            break;
        }
        let offset = data.len() - r.len();
        let Ok((r, pair)) = raw_pair(r) else { break };
        rest = r;
        out.push(parse_pair(pair, offset)?);
    }
    Ok(out)
}

fn parse_pair(pair: &[u8], offset: usize) -> Result<KeyValue, TextError> {
    // RFC 7143 §6.1: "A key-name is whatever precedes the first '=' in the
    // key=value pair." and "A value is whatever follows the first '='".
    let eq = pair
        .iter()
        .position(|&b| b == b'=')
        .ok_or(TextError::MissingSeparator { offset })?;
    let (k, v) = (&pair[..eq], &pair[eq + 1..]);
    if k.is_empty() {
        return Err(TextError::EmptyKey { offset });
    }
    if k.len() > MAX_KEY_LEN {
        return Err(TextError::KeyTooLong { len: k.len() });
    }
    let key = core::str::from_utf8(k).map_err(|_| TextError::InvalidUtf8 { offset })?;
    if !is_valid_key(key) {
        return Err(TextError::InvalidKey(key.to_string()));
    }
    let max = if is_binary_encoded(v) {
        MAX_BINARY_VALUE_LEN
    } else {
        // A list-of-values is limited per element, not as a whole.
        MAX_VALUE_LEN
    };
    let longest = if is_binary_encoded(v) {
        v.len()
    } else {
        v.split(|&b| b == b',').map(<[u8]>::len).max().unwrap_or(0)
    };
    if longest > max {
        return Err(TextError::ValueTooLong {
            key: key.to_string(),
            len: longest,
            max,
        });
    }
    let value = core::str::from_utf8(v).map_err(|_| TextError::InvalidUtf8 {
        offset: offset + eq + 1,
    })?;
    Ok((key.to_string(), value.to_string()))
}

/// Length of `pairs` once encoded.
pub fn encoded_len<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> usize {
    pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + 1 + v.as_ref().len() + 1)
        .sum()
}

/// Append `pairs` to `buf` as `key=value\0` items.
pub fn encode_kv_into<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)], buf: &mut BytesMut) {
    buf.reserve(encoded_len(pairs));
    for (k, v) in pairs {
        buf.put_slice(k.as_ref().as_bytes());
        buf.put_u8(b'=');
        buf.put_slice(v.as_ref().as_bytes());
        // RFC 7143 §6.1: "Every key=value pair, including the last or only
        // pair in a LTDS, MUST be followed by one null (0x00) delimiter."
        buf.put_u8(0);
    }
}

/// Encode `pairs` as a text data segment.
pub fn encode_kv<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Bytes {
    let mut b = BytesMut::new();
    encode_kv_into(pairs, &mut b);
    b.freeze()
}

/// Split an encoded text into data segments of at most `max_segment` bytes
/// (the peer's MaxRecvDataSegmentLength) for C-bit continuation. Every
/// segment but the last goes in a PDU with C=1.
///
/// RFC 7143 §6.1: "Key=value pairs may span PDU boundaries." The cut may
/// fall anywhere, even inside a pair. An empty text gives one empty segment.
/// `max_segment` of 0 is treated as 1.
pub fn split_text(text: &Bytes, max_segment: usize) -> Vec<Bytes> {
    let max = max_segment.max(1);
    if text.is_empty() {
        return vec![Bytes::new()];
    }
    let mut out = Vec::with_capacity(text.len().div_ceil(max));
    let mut off = 0;
    while off < text.len() {
        let end = (off + max).min(text.len());
        out.push(text.slice(off..end));
        off = end;
    }
    out
}

/// Sender side of a continued text: hands out one segment per PDU.
#[derive(Debug, Clone, Default)]
pub struct TextSender {
    pending: std::collections::VecDeque<Bytes>,
}

impl TextSender {
    /// Queue `text`, to be cut into segments of at most `max_segment` bytes.
    pub fn new(text: Bytes, max_segment: usize) -> Self {
        TextSender {
            pending: split_text(&text, max_segment).into(),
        }
    }

    /// The next segment and whether more follow (the C bit), or `None` when
    /// everything was handed out.
    pub fn next_segment(&mut self) -> Option<(Bytes, bool)> {
        let seg = self.pending.pop_front()?;
        Some((seg, !self.pending.is_empty()))
    }

    /// Whether segments remain.
    pub fn has_more(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Receiver side of a continued text: joins data segments of PDUs with the
/// C bit set until one arrives with C=0, within a bounded total size.
#[derive(Debug, Clone)]
pub struct TextAccumulator {
    buf: BytesMut,
    max: usize,
}

impl Default for TextAccumulator {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TEXT_LEN)
    }
}

impl TextAccumulator {
    /// An empty accumulator that refuses texts longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        TextAccumulator {
            buf: BytesMut::new(),
            max,
        }
    }

    /// Add one PDU's data segment. With `continued` (C bit) set, returns
    /// `Ok(None)`: wait for more. Otherwise returns the parsed complete text
    /// and resets for the next one. On error the accumulator is reset too.
    pub fn push(
        &mut self,
        segment: &[u8],
        continued: bool,
    ) -> Result<Option<Vec<KeyValue>>, TextError> {
        let len = self.buf.len().saturating_add(segment.len());
        if len > self.max {
            self.buf.clear();
            return Err(TextError::TooLong { len, max: self.max });
        }
        self.buf.extend_from_slice(segment);
        if continued {
            return Ok(None);
        }
        let text = self.buf.split().freeze();
        parse_kv(&text).map(Some)
    }

    /// Whether part of a continued text is buffered.
    pub fn is_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes buffered so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Drop any partial text.
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn parse_basic_pairs() {
        let p = parse_kv(b"InitiatorName=iqn.2024-01.x:y\0SessionType=Normal\0").unwrap();
        assert_eq!(
            p,
            vec![
                kv("InitiatorName", "iqn.2024-01.x:y"),
                kv("SessionType", "Normal")
            ]
        );
    }

    #[test]
    fn parse_value_may_contain_equals_and_be_empty() {
        let p = parse_kv(b"X-a.b=c=d\0TargetAlias=\0").unwrap();
        assert_eq!(p, vec![kv("X-a.b", "c=d"), kv("TargetAlias", "")]);
    }

    #[test]
    fn parse_tolerates_padding_and_missing_final_nul() {
        let p = parse_kv(b"A=1\0\0\0B=2").unwrap();
        assert_eq!(p, vec![kv("A", "1"), kv("B", "2")]);
        assert_eq!(parse_kv(b"").unwrap(), vec![]);
        assert_eq!(parse_kv(b"\0\0\0\0").unwrap(), vec![]);
    }

    #[test]
    fn parse_rejects_bad_pairs() {
        assert_eq!(
            parse_kv(b"A=1\0Bogus\0"),
            Err(TextError::MissingSeparator { offset: 4 })
        );
        assert_eq!(parse_kv(b"=x\0"), Err(TextError::EmptyKey { offset: 0 }));
        assert!(matches!(parse_kv(b"1a=x\0"), Err(TextError::InvalidKey(_))));
        assert!(matches!(
            parse_kv(b"A#B=x\0"),
            Err(TextError::InvalidKey(_))
        ));
        assert!(matches!(
            parse_kv(b"A B=x\0"),
            Err(TextError::InvalidKey(_))
        ));
        assert!(matches!(
            parse_kv(b"A=\xff\xfe\0"),
            Err(TextError::InvalidUtf8 { offset: 2 })
        ));
    }

    #[test]
    fn key_length_limit() {
        let k63 = format!("K{}", "a".repeat(62));
        let k64 = format!("K{}", "a".repeat(63));
        assert!(parse_kv(format!("{k63}=1\0").as_bytes()).is_ok());
        assert_eq!(
            parse_kv(format!("{k64}=1\0").as_bytes()),
            Err(TextError::KeyTooLong { len: 64 })
        );
    }

    #[test]
    fn value_length_limits() {
        let v255 = "v".repeat(255);
        let v256 = "v".repeat(256);
        assert!(parse_kv(format!("A={v255}\0").as_bytes()).is_ok());
        assert!(matches!(
            parse_kv(format!("A={v256}\0").as_bytes()),
            Err(TextError::ValueTooLong {
                len: 256,
                max: 255,
                ..
            })
        ));
        // Lists are limited per element.
        assert!(parse_kv(format!("A={v255},{v255}\0").as_bytes()).is_ok());
        // Binary encodings (CHAP challenges) may be longer.
        let hex = format!("0x{}", "ab".repeat(1024));
        assert!(parse_kv(format!("CHAP_C={hex}\0").as_bytes()).is_ok());
        let huge = format!("0x{}", "ab".repeat(8193));
        assert!(matches!(
            parse_kv(format!("CHAP_C={huge}\0").as_bytes()),
            Err(TextError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn extension_keys() {
        assert!(is_valid_key("X-com.example.foo"));
        assert!(is_valid_key("X#NodeArchitecture"));
        assert!(!is_valid_key("Y#Foo"));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key("1A"));
        assert!(is_valid_key("iSCSIProtocolLevel"));
    }

    #[test]
    fn encode_round_trip() {
        let pairs = vec![
            kv("HeaderDigest", "CRC32C,None"),
            kv("MaxBurstLength", "262144"),
        ];
        let b = encode_kv(&pairs);
        assert_eq!(&b[..], b"HeaderDigest=CRC32C,None\0MaxBurstLength=262144\0");
        assert_eq!(encoded_len(&pairs), b.len());
        assert_eq!(parse_kv(&b).unwrap(), pairs);
    }

    #[test]
    fn split_and_accumulate_round_trip() {
        let pairs: Vec<KeyValue> = (0..50)
            .map(|i| kv(&format!("X-k{i}"), &format!("value{i}")))
            .collect();
        let text = encode_kv(&pairs);
        for max in [1, 7, 48, 512, 100_000] {
            let segs = split_text(&text, max);
            assert!(segs.iter().all(|s| s.len() <= max));
            let mut acc = TextAccumulator::new(text.len());
            let n = segs.len();
            let mut got = None;
            for (i, s) in segs.iter().enumerate() {
                got = acc.push(s, i + 1 < n).unwrap();
                assert_eq!(got.is_some(), i + 1 == n);
            }
            assert_eq!(got.unwrap(), pairs);
            assert!(!acc.is_pending());
        }
        assert_eq!(split_text(&Bytes::new(), 10), vec![Bytes::new()]);
    }

    #[test]
    fn accumulator_is_bounded() {
        let mut acc = TextAccumulator::new(10);
        assert_eq!(acc.push(b"A=12345", true), Ok(None));
        assert_eq!(
            acc.push(b"6789", true),
            Err(TextError::TooLong { len: 11, max: 10 })
        );
        assert!(acc.is_empty());
        assert_eq!(acc.push(b"A=1\0", false), Ok(Some(vec![kv("A", "1")])));
    }

    #[test]
    fn text_sender_sets_continue_bit() {
        let mut s = TextSender::new(Bytes::from_static(b"A=1\0B=2\0"), 5);
        assert_eq!(
            s.next_segment(),
            Some((Bytes::from_static(b"A=1\0B"), true))
        );
        assert_eq!(s.next_segment(), Some((Bytes::from_static(b"=2\0"), false)));
        assert_eq!(s.next_segment(), None);
    }
}
