//! CHAP digest algorithms (IANA "PPP Authentication Algorithms") and the
//! RFC 1994 §4.1 response: `H(Identifier || secret || Challenge)`.

use core::fmt;

use sha2::Digest;

/// A CHAP_A value we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// 5: CHAP with MD5 (RFC 1994), the one RFC 7143 requires.
    Md5 = 5,
    /// 6: CHAP with SHA-1.
    Sha1 = 6,
    /// 7: CHAP with SHA-256 (tgt/IET misread 7 as SHA-1, see crate docs).
    Sha256 = 7,
    /// 8: CHAP with SHA3-256.
    Sha3_256 = 8,
}

/// Default initiator offer, `CHAP_A=8,6,5,7`; see the crate docs for why
/// SHA-256 comes after MD5.
pub const DEFAULT_INITIATOR_PREFERENCE: [Algorithm; 4] = [
    Algorithm::Sha3_256,
    Algorithm::Sha1,
    Algorithm::Md5,
    Algorithm::Sha256,
];

impl Algorithm {
    /// Every algorithm, strongest first.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Sha3_256,
        Algorithm::Sha256,
        Algorithm::Sha1,
        Algorithm::Md5,
    ];

    /// The CHAP_A number.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// From a CHAP_A number.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            5 => Some(Algorithm::Md5),
            6 => Some(Algorithm::Sha1),
            7 => Some(Algorithm::Sha256),
            8 => Some(Algorithm::Sha3_256),
            _ => None,
        }
    }

    /// From one CHAP_A list element (decimal, surrounding blanks ignored).
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim();
        if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        v.parse::<u32>().ok().and_then(Algorithm::from_code)
    }

    /// Digest (and therefore CHAP_R) length in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 | Algorithm::Sha3_256 => 32,
        }
    }

    /// Human-readable name.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha1 => "SHA-1",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha3_256 => "SHA3-256",
        }
    }

    /// Render a list as a CHAP_A value, e.g. `"8,6,5,7"`.
    pub fn list(algs: &[Algorithm]) -> String {
        algs.iter()
            .map(|a| a.code().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

fn hash<D: Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut d = D::new();
    d.update([id]);
    d.update(secret);
    d.update(challenge);
    d.finalize().to_vec()
}

/// RFC 1994 §4.1: "The Response Value is the one-way hash calculated over a
/// stream of octets consisting of the Identifier, followed by (concatenated
/// with) the "secret", followed by (concatenated with) the Challenge Value."
pub fn response(alg: Algorithm, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    match alg {
        Algorithm::Md5 => hash::<md5::Md5>(id, secret, challenge),
        Algorithm::Sha1 => hash::<sha1::Sha1>(id, secret, challenge),
        Algorithm::Sha256 => hash::<sha2::Sha256>(id, secret, challenge),
        Algorithm::Sha3_256 => hash::<sha3::Sha3_256>(id, secret, challenge),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_code(a.code().into()), Some(a));
            assert_eq!(Algorithm::parse(&a.code().to_string()), Some(a));
            assert_eq!(response(a, 1, b"s", b"c").len(), a.digest_len());
        }
        for bad in ["", "4", "9", "128", "x", "5x", "-5", "99999999999999"] {
            assert_eq!(Algorithm::parse(bad), None, "{bad}");
        }
        assert_eq!(Algorithm::parse(" 7 "), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::list(&DEFAULT_INITIATOR_PREFERENCE), "8,6,5,7");
    }

    #[test]
    fn default_offer_has_md5_before_sha256() {
        // RFC 7143 §12.1.3: MD5 MUST be offered; tgt reads 7 as SHA-1 and picks
        // the first of 5/7 in our order, so 5 must precede 7.
        let pos = |a| DEFAULT_INITIATOR_PREFERENCE.iter().position(|x| *x == a);
        assert!(pos(Algorithm::Md5).unwrap() < pos(Algorithm::Sha256).unwrap());
    }

    #[test]
    fn known_md5_vector() {
        // MD5(0x00 || "0123456789ab" || 0x00), computed with python3 hashlib
        // (also in tests/vectors.txt).
        assert_eq!(
            hex::encode(response(Algorithm::Md5, 0, b"0123456789ab", &[0])),
            "be65c2ecf8fb0da6649a77f34d85033c"
        );
    }
}
