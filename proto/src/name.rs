//! iSCSI names and ISIDs.
//!
//! * [`IscsiName`]: the three name formats of RFC 7143 §4.2.7 (`iqn.`, `eui.`,
//!   `naa.`), validated and normalized per the iSCSI stringprep profile
//!   (RFC 3722), plus generation of fresh initiator/target names from
//!   caller-provided randomness (this crate is sans-IO: no RNG here).
//! * [`Isid`]: the 6-byte Initiator Session ID (RFC 7143 §11.12.5) with its
//!   T/A/B/C/D layout and the OUI, EN and Random formats.
//!
//! # Normalization (RFC 3722) and its limits
//!
//! RFC 7143 §4.2.7.2: "iSCSI names are composed only of displayable
//! characters ... case-folded to lower case ... the following characters are
//! allowed: ASCII dash ('-'), ASCII dot ('.'), ASCII colon (':'), ASCII
//! lowercase letters, ASCII digits, and non-ASCII Unicode characters" that
//! survive the stringprep profile. This module case-folds (`char::to_lowercase`),
//! keeps ASCII `[a-z0-9.:-]` and non-ASCII characters except controls, white
//! space, private-use, formatting and non-characters, and rejects everything
//! else (ASCII space, controls, `_`, `/`, `@`, ...). Not done:
//! full Unicode NFKC normalization and the complete stringprep mapping tables
//! (no Unicode tables in `proto`); names are almost always ASCII in practice.
//!
//! RFC 7143 §4.2.7.1: "Each iSCSI name ... is no more than 223 bytes" (UTF-8).

use core::fmt;
use core::str::FromStr;

/// RFC 7143 §4.2.7.1: an iSCSI name is at most 223 bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 223;

/// The naming authority used by [`IscsiName::generate_initiator`] and
/// [`IscsiName::generate_target`]: `iqn.2024-01.rs.iscsi`.
///
/// An `iqn.` name embeds a date and a reversed domain that the name's
/// creator controlled at that date (RFC 7143 §4.2.7.3). This project does
/// not own a domain, so it uses this fixed, clearly project-specific prefix
/// for generated defaults; deployments that care should configure names
/// under their own domain instead.
pub const NAMING_AUTHORITY: &str = "iqn.2024-01.rs.iscsi";

/// The three name formats of RFC 7143 §4.2.7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameType {
    /// `iqn.` iSCSI-qualified name (§4.2.7.3).
    Iqn,
    /// `eui.` IEEE EUI-64 (§4.2.7.4).
    Eui,
    /// `naa.` T11 Network Address Authority (§4.2.7.5).
    Naa,
}

/// What is wrong with a proposed iSCSI name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("iSCSI name is empty")]
    Empty,
    #[error("iSCSI name is {len} bytes long; RFC 7143 §4.2.7.1 allows at most 223 bytes")]
    TooLong { len: usize },
    #[error(
        "character {ch:?} at byte {pos} is not allowed in an iSCSI name \
         (allowed: a-z, 0-9, '-', '.', ':' and printable non-ASCII; RFC 3722)"
    )]
    InvalidChar { ch: char, pos: usize },
    #[error("iSCSI name must start with \"iqn.\", \"eui.\" or \"naa.\" (RFC 7143 §4.2.7)")]
    UnknownType,
    #[error("iqn name must continue with a date \"YYYY-MM.\" after \"iqn.\" (e.g. iqn.2001-04.com.example)")]
    IqnDate,
    #[error("iqn name has month {month:02}; months are 01 to 12")]
    IqnMonth { month: u8 },
    #[error("iqn name has no naming authority (reversed domain name) after the date")]
    IqnMissingAuthority,
    #[error("iqn naming authority {authority:?} is not a reversed domain name (labels of a-z, 0-9, '-' separated by single dots)")]
    IqnAuthority { authority: String },
    #[error("iqn name ends with ':' but has nothing after it")]
    IqnEmptyUnique,
    #[error("eui name needs exactly 16 hex digits after \"eui.\", got {digits} characters")]
    EuiLength { digits: usize },
    #[error("naa name needs 16 or 32 hex digits after \"naa.\", got {digits} characters")]
    NaaLength { digits: usize },
    #[error("{kind} name contains non-hex character {ch:?}")]
    NotHex { kind: &'static str, ch: char },
}

/// A validated, normalized iSCSI name (RFC 7143 §4.2.7).
///
/// Two names are equal iff their normalized forms are byte-equal, which is
/// the comparison RFC 7143 §4.2.7.2 prescribes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IscsiName {
    name: String,
}

/// Case-fold and check the character repertoire (RFC 3722, see module docs).
pub fn normalize(raw: &str) -> Result<String, NameError> {
    normalize_with(raw, false)
}

fn normalize_with(raw: &str, allow_underscore: bool) -> Result<String, NameError> {
    let mut out = String::with_capacity(raw.len().min(MAX_NAME_LEN + 4));
    for (pos, ch) in raw.char_indices() {
        if ch.is_ascii() {
            let c = ch.to_ascii_lowercase();
            if c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, '-' | '.' | ':')
                || (allow_underscore && c == '_')
            {
                out.push(c);
            } else {
                return Err(NameError::InvalidChar { ch, pos });
            }
        } else if non_ascii_allowed(ch) {
            out.extend(ch.to_lowercase());
        } else {
            return Err(NameError::InvalidChar { ch, pos });
        }
        if out.len() > MAX_NAME_LEN {
            // Stop early on absurd input; report the raw length.
            return Err(NameError::TooLong {
                len: raw.len().max(out.len()),
            });
        }
    }
    Ok(out)
}

/// Non-ASCII characters that survive the RFC 3722 prohibition tables as far
/// as std can tell: no controls, no white space, no private use, no
/// non-characters.
fn non_ascii_allowed(ch: char) -> bool {
    let c = ch as u32;
    !(ch.is_control()
        || ch.is_whitespace()
        || (0xe000..=0xf8ff).contains(&c)
        || c >= 0xf0000
        || (0xfdd0..=0xfdef).contains(&c)
        || (c & 0xfffe) == 0xfffe
        || matches!(c, 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffd))
}

fn check_hex(kind: &'static str, digits: &str) -> Result<(), NameError> {
    match digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        Some(ch) => Err(NameError::NotHex { kind, ch }),
        None => Ok(()),
    }
}

fn check_iqn(rest: &str) -> Result<(), NameError> {
    // rest = "YYYY-MM.authority[:unique]"
    let b = rest.as_bytes();
    if b.len() < 8
        || !b[..4].iter().all(u8::is_ascii_digit)
        || b[4] != b'-'
        || !b[5..7].iter().all(u8::is_ascii_digit)
        || b[7] != b'.'
    {
        return Err(NameError::IqnDate);
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    if !(1..=12).contains(&month) {
        return Err(NameError::IqnMonth { month });
    }
    let after = &rest[8..];
    let (authority, unique) = match after.find(':') {
        Some(i) => (&after[..i], Some(&after[i + 1..])),
        None => (after, None),
    };
    if authority.is_empty() {
        return Err(NameError::IqnMissingAuthority);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || !c.is_ascii())
    };
    if !authority.split('.').all(label_ok) {
        return Err(NameError::IqnAuthority {
            authority: authority.to_string(),
        });
    }
    if unique == Some("") {
        return Err(NameError::IqnEmptyUnique);
    }
    Ok(())
}

impl IscsiName {
    /// Validate and normalize (case-fold) a name.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        Self::parse_with(raw, false)
    }

    /// [`IscsiName::parse`] that also accepts `_` in the unique part of
    /// the name (after the naming authority). RFC 3722's repertoire has no
    /// `_`, but initiators in the field send names with it (hostnames such
    /// as `iqn.1991-05.com.microsoft:web_01`); the second value says
    /// whether the name needed this leniency, for the caller to warn.
    pub fn parse_lenient(raw: &str) -> Result<(Self, bool), NameError> {
        match Self::parse(raw) {
            Ok(n) => Ok((n, false)),
            Err(NameError::InvalidChar { ch: '_', .. }) => {
                Self::parse_with(raw, true).map(|n| (n, true))
            }
            Err(e) => Err(e),
        }
    }

    fn parse_with(raw: &str, allow_underscore: bool) -> Result<Self, NameError> {
        if raw.is_empty() {
            return Err(NameError::Empty);
        }
        let name = normalize_with(raw, allow_underscore)?;
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong { len: name.len() });
        }
        if let Some(rest) = name.strip_prefix("iqn.") {
            check_iqn(rest)?;
        } else if let Some(rest) = name.strip_prefix("eui.") {
            // RFC 7143 §4.2.7.4: "eui." followed by an EUI-64 in 16 hex digits.
            if rest.len() != 16 {
                return Err(NameError::EuiLength {
                    digits: rest.chars().count(),
                });
            }
            check_hex("eui", rest)?;
        } else if let Some(rest) = name.strip_prefix("naa.") {
            // RFC 7143 §4.2.7.5: 64-bit (16 hex) or 128-bit (32 hex) NAA.
            if rest.len() != 16 && rest.len() != 32 {
                return Err(NameError::NaaLength {
                    digits: rest.chars().count(),
                });
            }
            check_hex("naa", rest)?;
        } else {
            return Err(NameError::UnknownType);
        }
        Ok(IscsiName { name })
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Which of the three formats this is.
    pub fn name_type(&self) -> NameType {
        if self.name.starts_with("iqn.") {
            NameType::Iqn
        } else if self.name.starts_with("eui.") {
            NameType::Eui
        } else {
            NameType::Naa
        }
    }

    /// `NAMING_AUTHORITY:<unique>` with `unique` sanitized (case-folded,
    /// disallowed characters replaced by '-') and truncated to fit 223 bytes.
    /// Returns an error only if nothing usable is left of `unique`.
    pub fn under_default_authority(unique: &str) -> Result<Self, NameError> {
        let s = sanitize(unique, MAX_NAME_LEN - NAMING_AUTHORITY.len() - 1);
        if s.is_empty() {
            return Err(NameError::IqnEmptyUnique);
        }
        IscsiName::parse(&format!("{NAMING_AUTHORITY}:{s}"))
    }

    /// A fresh initiator name:
    /// `iqn.2024-01.rs.iscsi:initiator:<host>:<12 hex digits of random>`
    /// (or without the host part). `random` must come from the caller's RNG.
    pub fn generate_initiator(host: Option<&str>, random: u64) -> Self {
        Self::generate("initiator", host, random)
    }

    /// A fresh target name:
    /// `iqn.2024-01.rs.iscsi:target:<label>:<12 hex digits of random>`
    /// (or without the label part). `random` must come from the caller's RNG.
    pub fn generate_target(label: Option<&str>, random: u64) -> Self {
        Self::generate("target", label, random)
    }

    fn generate(role: &str, label: Option<&str>, random: u64) -> Self {
        let hex = format!("{:012x}", random & 0xffff_ffff_ffff);
        let fixed = NAMING_AUTHORITY.len() + 1 + role.len() + 1 + hex.len();
        let label = label
            .map(|l| sanitize(l, MAX_NAME_LEN - fixed - 1))
            .unwrap_or_default();
        let name = if label.is_empty() {
            format!("{NAMING_AUTHORITY}:{role}:{hex}")
        } else {
            format!("{NAMING_AUTHORITY}:{role}:{label}:{hex}")
        };
        debug_assert!(IscsiName::parse(&name).is_ok(), "{name}");
        IscsiName { name }
    }
}

/// Case-fold, replace disallowed characters by '-', trim leading/trailing
/// separators, and cut to at most `max` bytes (on a char boundary).
fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::new();
    for ch in s.chars() {
        let mapped: String = if ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | ':') {
            ch.to_ascii_lowercase().to_string()
        } else if !ch.is_ascii() && non_ascii_allowed(ch) {
            ch.to_lowercase().collect()
        } else {
            "-".to_string()
        };
        if out.len() + mapped.len() > max {
            break;
        }
        out.push_str(&mapped);
    }
    out.trim_matches(|c| matches!(c, '-' | '.' | ':'))
        .to_string()
}

impl fmt::Display for IscsiName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for IscsiName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        IscsiName::parse(s)
    }
}

impl AsRef<str> for IscsiName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

/// The ISID type field T (RFC 7143 §11.12.5, 2 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsidType {
    /// T = 00b: A+B hold a 22-bit OUI, C+D a 24-bit qualifier.
    Oui,
    /// T = 01b: B+C hold a 24-bit IANA Enterprise Number, D a qualifier.
    En,
    /// T = 10b: B+C are 24 random bits, D a qualifier.
    Random,
    /// T = 11b: reserved.
    Reserved,
}

/// Initiator Session ID, 6 bytes (RFC 7143 §11.12.5):
///
/// ```text
///  Byte/     0       |       1       |       2       |       3       |
///     /              |               |               |               |
///    |0 1 2 3 4 5 6 7|0 1 2 3 4 5 6 7|0 1 2 3 4 5 6 7|0 1 2 3 4 5 6 7|
///    +---------------+---------------+---------------+---------------+
///   8| T |    A      |               B               |      C        |
///    +---------------+---------------+---------------+---------------+
///  12|               D               |
///    +---------------+---------------+
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Isid([u8; 6]);

impl Isid {
    /// From the 6 wire bytes (any value is accepted, including reserved T).
    pub const fn from_bytes(bytes: [u8; 6]) -> Self {
        Isid(bytes)
    }

    /// The 6 wire bytes.
    pub const fn to_bytes(self) -> [u8; 6] {
        self.0
    }

    /// Type-Random ISID (T = 10b, A = 0) with 24 caller-provided random bits in
    /// B and C and qualifier D = 0. `random` must come from the caller's RNG.
    pub const fn random(random: [u8; 3]) -> Self {
        Isid([0x80, random[0], random[1], random[2], 0, 0])
    }

    /// Type-OUI ISID (T = 00b): `oui` is the 22-bit OUI without the I/G and
    /// U/L bits (RFC 7143 §11.12.5: "the I/G and U/L bits are omitted"),
    /// `qualifier` the low 24 bits of C+D. Extra high bits are masked off.
    pub const fn oui_format(oui: u32, qualifier: u32) -> Self {
        let oui = oui & 0x3f_ffff;
        let q = qualifier & 0xff_ffff;
        Isid([
            (oui >> 16) as u8,
            (oui >> 8) as u8,
            oui as u8,
            (q >> 16) as u8,
            (q >> 8) as u8,
            q as u8,
        ])
    }

    /// Type-EN ISID (T = 01b, A = 0): `enterprise_number` (24 bits) in B+C,
    /// `qualifier` in D.
    pub const fn en_format(enterprise_number: u32, qualifier: u16) -> Self {
        let en = enterprise_number & 0xff_ffff;
        let q = qualifier.to_be_bytes();
        Isid([
            0x40,
            (en >> 16) as u8,
            (en >> 8) as u8,
            en as u8,
            q[0],
            q[1],
        ])
    }

    /// The same ISID with qualifier D replaced (the low 16 bits, which every
    /// format uses as a per-session qualifier).
    #[must_use]
    pub const fn with_qualifier(self, qualifier: u16) -> Self {
        let q = qualifier.to_be_bytes();
        let b = self.0;
        Isid([b[0], b[1], b[2], b[3], q[0], q[1]])
    }

    /// The T field.
    pub const fn isid_type(self) -> IsidType {
        match self.0[0] >> 6 {
            0 => IsidType::Oui,
            1 => IsidType::En,
            2 => IsidType::Random,
            _ => IsidType::Reserved,
        }
    }

    /// The A field (6 bits).
    pub const fn a(self) -> u8 {
        self.0[0] & 0x3f
    }

    /// The B field (16 bits).
    pub const fn b(self) -> u16 {
        u16::from_be_bytes([self.0[1], self.0[2]])
    }

    /// The C field (8 bits).
    pub const fn c(self) -> u8 {
        self.0[3]
    }

    /// The D field (16 bits, the qualifier).
    pub const fn d(self) -> u16 {
        u16::from_be_bytes([self.0[4], self.0[5]])
    }

    /// The ISID as a 48-bit integer (big-endian wire order).
    pub const fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

impl From<[u8; 6]> for Isid {
    fn from(b: [u8; 6]) -> Self {
        Isid(b)
    }
}

impl From<Isid> for [u8; 6] {
    fn from(i: Isid) -> Self {
        i.0
    }
}

/// 12 lower-case hex digits, e.g. `80123456789a`.
impl fmt::Display for Isid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Isid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Isid({self})")
    }
}

/// Error parsing an ISID from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an ISID is written as 12 hex digits (optionally prefixed by 0x), got {0:?}")]
pub struct IsidParseError(pub String);

/// Parses 12 hex digits, optionally prefixed by `0x`/`0X`.
impl FromStr for Isid {
    type Err = IsidParseError;
    fn from_str(s: &str) -> Result<Self, IsidParseError> {
        let err = || IsidParseError(s.chars().take(40).collect());
        let digits = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if digits.len() != 12 || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Isid(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_names_from_rfc() {
        // RFC 7143 §4.2.7.3 / §4.2.7.4 / §4.2.7.5 examples.
        for (raw, ty) in [
            (
                "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309",
                NameType::Iqn,
            ),
            ("iqn.2001-04.com.example", NameType::Iqn),
            (
                "iqn.2001-04.com.example:storage.tape1.sys1.xyz",
                NameType::Iqn,
            ),
            (
                "iqn.2001-04.com.example.storage:tape1.sys1.xyz",
                NameType::Iqn,
            ),
            ("iqn.1992-08.com.netapp:sn.84183797", NameType::Iqn),
            ("eui.02004567a425678d", NameType::Eui),
            ("naa.52004567ba64678d", NameType::Naa),
            ("naa.62004567ba64678d0123456789abcdef", NameType::Naa),
        ] {
            let n = IscsiName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(n.as_str(), raw);
            assert_eq!(n.name_type(), ty);
        }
    }

    #[test]
    fn normalizes_case() {
        let n = IscsiName::parse("IQN.2001-04.Com.Example:Storage").unwrap();
        assert_eq!(n.as_str(), "iqn.2001-04.com.example:storage");
        let e = IscsiName::parse("EUI.02004567A425678D").unwrap();
        assert_eq!(e.as_str(), "eui.02004567a425678d");
        assert_eq!(e, IscsiName::parse("eui.02004567a425678d").unwrap());
        let u = IscsiName::parse("iqn.2001-04.com.example:DİSK-Ä").unwrap();
        assert!(u.as_str().ends_with(":di\u{307}sk-ä"), "{}", u.as_str());
    }

    #[test]
    fn lenient_parse_accepts_underscore_in_the_unique_part_only() {
        let (n, lenient) = IscsiName::parse_lenient("IQN.1991-05.com.microsoft:Web_01").unwrap();
        assert_eq!(
            (n.as_str(), lenient),
            ("iqn.1991-05.com.microsoft:web_01", true)
        );
        let (_, lenient) = IscsiName::parse_lenient("iqn.1991-05.com.microsoft:web-01").unwrap();
        assert!(!lenient);
        assert!(IscsiName::parse_lenient("iqn.1991-05.com.micro_soft:web").is_err());
        assert!(IscsiName::parse_lenient("iqn.1991-05.com.microsoft:web 01").is_err());
        assert!(IscsiName::parse_lenient("eui.02004567a425678_").is_err());
    }

    #[test]
    fn invalid_names_say_why() {
        use NameError::*;
        let cases: &[(&str, NameError)] = &[
            ("", Empty),
            (
                "iqn.2001-04.com.example:has space",
                InvalidChar { ch: ' ', pos: 27 },
            ),
            (
                "iqn.2001-04.com.example:under_score",
                InvalidChar { ch: '_', pos: 29 },
            ),
            (
                "iqn.2001-04.com.example:tab\t",
                InvalidChar { ch: '\t', pos: 27 },
            ),
            (
                "iqn.2001-04.com.example:\u{a0}",
                InvalidChar {
                    ch: '\u{a0}',
                    pos: 24,
                },
            ),
            (
                "iqn.2001-04.com.example:\u{e000}",
                InvalidChar {
                    ch: '\u{e000}',
                    pos: 24,
                },
            ),
            ("foo.2001-04.com.example", UnknownType),
            ("iqn2001-04.com.example", UnknownType),
            ("iqn.01-04.com.example", IqnDate),
            ("iqn.2001-4.com.example", IqnDate),
            ("iqn.2001-04com.example", IqnDate),
            ("iqn.2001-13.com.example", IqnMonth { month: 13 }),
            ("iqn.2001-00.com.example", IqnMonth { month: 0 }),
            ("iqn.2001-04.", IqnMissingAuthority),
            ("iqn.2001-04.:x", IqnMissingAuthority),
            (
                "iqn.2001-04.com..example",
                IqnAuthority {
                    authority: "com..example".into(),
                },
            ),
            (
                "iqn.2001-04.com.example.:x",
                IqnAuthority {
                    authority: "com.example.".into(),
                },
            ),
            ("iqn.2001-04.com.example:", IqnEmptyUnique),
            ("eui.02004567a425678", EuiLength { digits: 15 }),
            ("eui.02004567a425678dd", EuiLength { digits: 17 }),
            (
                "eui.02004567a425678g",
                NotHex {
                    kind: "eui",
                    ch: 'g',
                },
            ),
            ("naa.52004567ba64678d00", NaaLength { digits: 18 }),
            (
                "naa.52004567ba64678x",
                NotHex {
                    kind: "naa",
                    ch: 'x',
                },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(IscsiName::parse(raw).as_ref(), Err(want), "{raw}");
            // Every error renders a message.
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn length_limit() {
        let base = "iqn.2001-04.com.example:";
        let ok = format!("{base}{}", "a".repeat(MAX_NAME_LEN - base.len()));
        assert_eq!(ok.len(), 223);
        assert!(IscsiName::parse(&ok).is_ok());
        let long = format!("{ok}a");
        assert!(matches!(
            IscsiName::parse(&long),
            Err(NameError::TooLong { .. })
        ));
        let huge = "a".repeat(1 << 20);
        assert!(matches!(
            IscsiName::parse(&huge),
            Err(NameError::TooLong { .. })
        ));
        // Multi-byte characters count in bytes.
        let mb = format!("{base}{}", "ä".repeat(100));
        assert!(mb.len() > 223);
        assert!(matches!(
            IscsiName::parse(&mb),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn generated_names() {
        let i = IscsiName::generate_initiator(Some("Build_Host.example"), 0x1234_5678_9abc_def0);
        assert_eq!(
            i.as_str(),
            "iqn.2024-01.rs.iscsi:initiator:build-host.example:56789abcdef0"
        );
        let t = IscsiName::generate_target(None, 7);
        assert_eq!(t.as_str(), "iqn.2024-01.rs.iscsi:target:000000000007");
        assert_ne!(
            IscsiName::generate_initiator(None, 1),
            IscsiName::generate_initiator(None, 2)
        );
        let long = IscsiName::generate_target(Some(&"x".repeat(500)), 1);
        assert!(long.as_str().len() <= MAX_NAME_LEN);
        assert!(IscsiName::parse(long.as_str()).is_ok());
        let empty_label = IscsiName::generate_target(Some("___"), 1);
        assert_eq!(
            empty_label.as_str(),
            "iqn.2024-01.rs.iscsi:target:000000000001"
        );
        assert_eq!(
            IscsiName::under_default_authority("Disk 1")
                .unwrap()
                .as_str(),
            "iqn.2024-01.rs.iscsi:disk-1"
        );
        assert_eq!(
            IscsiName::under_default_authority("  "),
            Err(NameError::IqnEmptyUnique)
        );
    }

    #[test]
    fn isid_formats() {
        let r = Isid::random([0xab, 0xcd, 0xef]);
        assert_eq!(r.to_bytes(), [0x80, 0xab, 0xcd, 0xef, 0, 0]);
        assert_eq!(r.isid_type(), IsidType::Random);
        assert_eq!((r.a(), r.b(), r.c(), r.d()), (0, 0xabcd, 0xef, 0));
        let rq = r.with_qualifier(0x1234);
        assert_eq!(rq.d(), 0x1234);
        assert_eq!(rq.to_string(), "80abcdef1234");
        assert_eq!(format!("{rq:?}"), "Isid(80abcdef1234)");

        let o = Isid::oui_format(0x3f_ffff, 0x12_3456);
        assert_eq!(o.isid_type(), IsidType::Oui);
        assert_eq!(o.to_bytes(), [0x3f, 0xff, 0xff, 0x12, 0x34, 0x56]);
        // Bits beyond 22 of the OUI never leak into T.
        assert_eq!(Isid::oui_format(u32::MAX, 0).isid_type(), IsidType::Oui);

        let e = Isid::en_format(0x00_1234, 0xbeef);
        assert_eq!(e.isid_type(), IsidType::En);
        assert_eq!(e.to_bytes(), [0x40, 0x00, 0x12, 0x34, 0xbe, 0xef]);
        assert_eq!(
            Isid::from_bytes([0xc0, 0, 0, 0, 0, 0]).isid_type(),
            IsidType::Reserved
        );
        assert_eq!(e.to_u64(), 0x4000_1234_beef);
    }

    #[test]
    fn isid_text() {
        assert_eq!(
            "80abcdef1234".parse::<Isid>().unwrap().to_bytes(),
            [0x80, 0xab, 0xcd, 0xef, 0x12, 0x34]
        );
        assert_eq!(
            "0x80ABCDEF1234".parse::<Isid>().unwrap().to_string(),
            "80abcdef1234"
        );
        for bad in [
            "",
            "80abcdef123",
            "80abcdef12345",
            "80abcdef123g",
            "+0abcdef1234",
            "０0abcdef1234",
        ] {
            assert!(bad.parse::<Isid>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_is_idempotent(s in "\\PC{0,64}") {
            if let Ok(n) = IscsiName::parse(&s) {
                prop_assert!(n.as_str().len() <= MAX_NAME_LEN);
                let again = IscsiName::parse(n.as_str()).unwrap();
                prop_assert_eq!(again, n);
            }
        }

        #[test]
        fn generated_names_are_valid(host in "\\PC{0,300}", r: u64) {
            let n = IscsiName::generate_initiator(Some(&host), r);
            prop_assert!(IscsiName::parse(n.as_str()).is_ok());
            prop_assert_eq!(IscsiName::parse(n.as_str()).unwrap(), n);
        }

        #[test]
        fn isid_round_trip(b: [u8; 6]) {
            let i = Isid::from_bytes(b);
            prop_assert_eq!(i.to_bytes(), b);
            prop_assert_eq!(i.to_string().parse::<Isid>().unwrap(), i);
            prop_assert_eq!(i.with_qualifier(i.d()), i);
        }
    }
}
