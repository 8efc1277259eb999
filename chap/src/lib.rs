//! CHAP authentication for iSCSI: RFC 1994 as profiled by RFC 7143 §12.1.3,
//! with the security requirements of RFC 7143 §9.2.1, both roles, one-way and
//! mutual.
//!
//! * [`InitiatorChap`] and [`TargetChap`] implement
//!   [`proto::login::auth::Authenticator`]: the login state machine feeds them
//!   the peer's `CHAP_*` keys and sends what they return.
//! * Pure helpers: [`response`] (`H(CHAP_I || secret || CHAP_C)`),
//!   [`encode_binary`] / [`decode_binary`] (RFC 7143 §6.1 binary values).
//!
//! The exchange (RFC 7143 §12.1.3):
//!
//! ```text
//! I->T CHAP_A=<A1,A2,...>
//! T->I CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>
//! I->T CHAP_N=<N> CHAP_R=<R>                            (one-way)
//!   or CHAP_N=<N> CHAP_R=<R> CHAP_I=<I> CHAP_C=<C>      (mutual)
//! T->I CHAP_N=<N> CHAP_R=<R>                            (mutual only)
//! ```
//!
//! # Algorithms and the tgt/IET interop quirk
//!
//! CHAP_A values come from IANA "PPP Authentication Algorithms": 5 = MD5,
//! 6 = SHA-1, 7 = SHA-256, 8 = SHA3-256 (the numbers the Linux target and
//! open-iscsi use). tgt (`usr/iscsi/chap.c`) and IET-derived targets read 7
//! as *SHA-1*, and they pick the first value of the initiator's list that
//! they know (5 or 7). An offer where 7 precedes 5 therefore makes such a
//! target compute SHA-1 while we compute SHA-256 and the login fails.
//! [`DEFAULT_INITIATOR_PREFERENCE`] is `8,6,5,7`: targets that implement
//! the IANA numbers pick SHA3-256 (or SHA-1), tgt/IET pick MD5, and a target
//! that allows only SHA-256 still finds it. RFC 7143 §12.1.3: "initiators
//! MUST always offer [MD5] as one of the proposed algorithms" — the default
//! does. Targets that misread a list as one value need
//! [`InitiatorChap::with_algorithm_preference`]`(vec![Algorithm::Md5])`.
//!
//! # Security requirements implemented
//!
//! * RFC 7143 §12.1.3: C and R "binary length ... MUST NOT exceed 1024
//!   bytes" — enforced before decoding ([`MAX_BINARY_LEN`]).
//! * RFC 7143 §9.2.1: "Originators MUST NOT reuse the CHAP challenge sent by
//!   the Responder for the other direction ... Responders MUST check for this
//!   condition" — the initiator never sends the target's challenge back, the
//!   target fails a login whose CHAP_C equals its own (`AuthFailure::Protocol`).
//! * RFC 7143 §9.2.1: "If the CHAP response received by one end ... is the
//!   same as the CHAP response that the receiving endpoint would have
//!   generated for the same CHAP challenge, the response MUST be treated as an
//!   authentication failure" — both roles check it.
//! * RFC 7143 §9.2.1: a secret with "less than 96 random bits MUST" only be
//!   used under IPsec — secrets under 12 bytes are refused unless
//!   [`SecretPolicy::AllowShort`] is chosen.
//! * Challenges come from a CSPRNG (`OsRng` unless the caller injects one)
//!   and are at least as long as the digest.
//! * Responses are compared in constant time (`subtle`); an unknown user and
//!   a wrong secret give the same failure, after the same work.
//! * Secrets never appear in `Debug` output or error messages.
//!
//! Not done: detecting a challenge reflected across *different* connections
//! (needs state shared between logins), zeroizing secrets in memory.
#![forbid(unsafe_code)]

mod algorithm;
mod encoding;
mod initiator;
mod target;

use core::fmt;

pub use algorithm::{response, Algorithm, DEFAULT_INITIATOR_PREFERENCE};
pub use encoding::{decode_binary, encode_base64, encode_binary, parse_identifier, MAX_BINARY_LEN};
pub use initiator::InitiatorChap;
pub use proto::login::auth::{AuthFailure, AuthStep, Authenticator, KeyValue};
pub use target::{SecretLookup, TargetChap};

/// Key names (RFC 7143 §12.1.3).
pub mod keys {
    pub const CHAP_A: &str = "CHAP_A";
    pub const CHAP_I: &str = "CHAP_I";
    pub const CHAP_C: &str = "CHAP_C";
    pub const CHAP_N: &str = "CHAP_N";
    pub const CHAP_R: &str = "CHAP_R";
}

/// RFC 7143 §9.2.1: secrets with fewer than 96 random bits need IPsec.
pub const MIN_SECRET_LEN: usize = 12;
/// Upper bound on a configured secret (open-iscsi and tgt cap around 256).
pub const MAX_SECRET_LEN: usize = 256;
/// Upper bound on CHAP_N (RFC 7143 §6.1: text values are at most 255 bytes).
pub const MAX_USER_LEN: usize = 255;
/// Bounds on the length of challenges we generate.
pub const MIN_CHALLENGE_LEN: usize = 16;
/// Default length of challenges we generate (≥ every digest length).
pub const DEFAULT_CHALLENGE_LEN: usize = 32;

/// Errors in configuration and in encoding helpers. Failures during an
/// exchange are reported as [`AuthFailure`] through [`AuthStep::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    #[error(
        "CHAP secret is {len} bytes; RFC 7143 §9.2.1 requires IPsec for secrets under \
         96 bits, so at least {min} bytes are needed (use a longer random secret or \
         SecretPolicy::AllowShort)"
    )]
    SecretTooShort { len: usize, min: usize },
    #[error("CHAP secret is {len} bytes; at most {max} are supported")]
    SecretTooLong { len: usize, max: usize },
    #[error("CHAP secret is empty (RFC 1994: at least 1 octet)")]
    EmptySecret,
    #[error("CHAP user name is empty")]
    EmptyUser,
    #[error("CHAP user name is {len} bytes; at most {max} are allowed")]
    UserTooLong { len: usize, max: usize },
    #[error("CHAP user name contains a NUL byte")]
    UserHasNul,
    #[error("no CHAP algorithm allowed: the list is empty")]
    NoAlgorithms,
    #[error("challenge length {len} is outside {min}..={max} bytes")]
    ChallengeLength { len: usize, min: usize, max: usize },
    #[error(
        "the same CHAP secret is configured for both directions; RFC 7143 §9.2.1 forbids \
         it (configure a different secret for target authentication)"
    )]
    SameSecretBothDirections,
    #[error("binary value must start with 0x (hex) or 0b (base64) (RFC 7143 §6.1)")]
    BinaryPrefix,
    #[error("binary value has no digits after its 0x/0b prefix")]
    BinaryEmpty,
    #[error("binary value is not valid hex")]
    BinaryHex,
    #[error("binary value is not valid base64")]
    BinaryBase64,
    #[error("binary value decodes to more than {max} bytes")]
    BinaryTooLong { max: usize },
    #[error("CHAP_I must be a number 0..=255, got {0:?}")]
    BadIdentifier(String),
}

/// How strictly secret lengths are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecretPolicy {
    /// RFC 7143 §9.2.1 without IPsec: at least [`MIN_SECRET_LEN`] bytes.
    #[default]
    Rfc7143,
    /// Accept secrets of 1 byte and more (test setups, or links protected
    /// by IPsec where RFC 7143 allows it).
    AllowShort,
}

impl SecretPolicy {
    /// Check one secret against the policy and [`MAX_SECRET_LEN`].
    pub fn check(self, secret: &[u8]) -> Result<(), ChapError> {
        if secret.is_empty() {
            return Err(ChapError::EmptySecret);
        }
        if secret.len() > MAX_SECRET_LEN {
            return Err(ChapError::SecretTooLong {
                len: secret.len(),
                max: MAX_SECRET_LEN,
            });
        }
        if self == SecretPolicy::Rfc7143 && secret.len() < MIN_SECRET_LEN {
            return Err(ChapError::SecretTooShort {
                len: secret.len(),
                min: MIN_SECRET_LEN,
            });
        }
        Ok(())
    }
}

/// A CHAP name and secret. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The CHAP_N name.
    pub user: String,
    /// The shared secret (raw bytes).
    pub secret: Vec<u8>,
}

impl Credentials {
    pub fn new(user: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        Credentials {
            user: user.into(),
            secret: secret.into(),
        }
    }

    /// Validate the user name and the secret under `policy`.
    pub fn validate(&self, policy: SecretPolicy) -> Result<(), ChapError> {
        validate_user(&self.user)?;
        policy.check(&self.secret)
    }
}

pub(crate) fn validate_user(user: &str) -> Result<(), ChapError> {
    if user.is_empty() {
        return Err(ChapError::EmptyUser);
    }
    if user.len() > MAX_USER_LEN {
        return Err(ChapError::UserTooLong {
            len: user.len(),
            max: MAX_USER_LEN,
        });
    }
    if user.contains('\0') {
        return Err(ChapError::UserHasNul);
    }
    Ok(())
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field(
                "secret",
                &format_args!("<redacted, {} bytes>", self.secret.len()),
            )
            .finish()
    }
}

/// Find a key that must appear at most once; a repeated key is a protocol
/// error (RFC 7143 §6.1: a key is sent at most once per negotiation).
pub(crate) fn find_key<'a>(
    received: &'a [KeyValue],
    key: &str,
) -> Result<Option<&'a str>, AuthFailure> {
    let mut found = None;
    for (k, v) in received {
        if k == key {
            if found.is_some() {
                return Err(AuthFailure::Protocol(format!("{key} sent more than once")));
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

pub(crate) fn require_key<'a>(received: &'a [KeyValue], key: &str) -> Result<&'a str, AuthFailure> {
    find_key(received, key)?.ok_or_else(|| AuthFailure::Protocol(format!("missing {key}")))
}

pub(crate) fn kv(k: &str, v: impl Into<String>) -> KeyValue {
    (k.to_string(), v.into())
}

pub(crate) fn check_challenge_len(len: usize) -> Result<(), ChapError> {
    if (MIN_CHALLENGE_LEN..=MAX_BINARY_LEN).contains(&len) {
        Ok(())
    } else {
        Err(ChapError::ChallengeLength {
            len,
            min: MIN_CHALLENGE_LEN,
            max: MAX_BINARY_LEN,
        })
    }
}

/// The challenge length actually used for `alg`: at least the digest length.
pub(crate) fn effective_challenge_len(configured: usize, alg: Algorithm) -> usize {
    configured.max(alg.digest_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_secret() {
        let c = Credentials::new("alice", b"very-secret-value".to_vec());
        let s = format!("{c:?}");
        assert!(s.contains("alice"));
        assert!(!s.contains("very-secret"), "{s}");
        assert!(s.contains("17 bytes"));
    }

    #[test]
    fn secret_policy() {
        let short = b"elevenbytes".as_slice();
        assert_eq!(short.len(), 11);
        assert_eq!(
            SecretPolicy::Rfc7143.check(short),
            Err(ChapError::SecretTooShort { len: 11, min: 12 })
        );
        assert!(SecretPolicy::AllowShort.check(short).is_ok());
        assert!(SecretPolicy::Rfc7143.check(b"twelve bytes").is_ok());
        assert_eq!(
            SecretPolicy::AllowShort.check(b""),
            Err(ChapError::EmptySecret)
        );
        assert!(matches!(
            SecretPolicy::AllowShort.check(&[0u8; 257]),
            Err(ChapError::SecretTooLong { len: 257, .. })
        ));
        let msg = ChapError::SecretTooShort { len: 11, min: 12 }.to_string();
        assert!(
            msg.contains("12 bytes") && msg.contains("AllowShort"),
            "{msg}"
        );
    }

    #[test]
    fn user_validation() {
        assert_eq!(validate_user(""), Err(ChapError::EmptyUser));
        assert_eq!(validate_user("a\0b"), Err(ChapError::UserHasNul));
        assert!(validate_user(&"u".repeat(255)).is_ok());
        assert!(matches!(
            validate_user(&"u".repeat(256)),
            Err(ChapError::UserTooLong { .. })
        ));
    }

    #[test]
    fn duplicate_keys_rejected() {
        let r = vec![kv("CHAP_N", "a"), kv("CHAP_N", "b")];
        assert!(matches!(
            find_key(&r, "CHAP_N"),
            Err(AuthFailure::Protocol(_))
        ));
        assert_eq!(find_key(&r, "CHAP_R"), Ok(None));
        assert!(
            matches!(require_key(&r, "CHAP_R"), Err(AuthFailure::Protocol(m)) if m.contains("CHAP_R"))
        );
    }
}
