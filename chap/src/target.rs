//! CHAP, target role (RFC 7143 §12.1.3).

use core::fmt;

use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;

use crate::keys::{CHAP_A, CHAP_C, CHAP_I, CHAP_N, CHAP_R};
use crate::{
    check_challenge_len, decode_binary, effective_challenge_len, encode_binary, find_key, kv,
    parse_identifier, require_key, response, validate_user, Algorithm, AuthFailure, AuthStep,
    Authenticator, ChapError, Credentials, KeyValue, SecretPolicy, MAX_BINARY_LEN, MAX_USER_LEN,
};

/// Maps a CHAP_N user name to its secret; `None` for an unknown user.
pub type SecretLookup = Box<dyn Fn(&str) -> Option<Vec<u8>> + Send>;

/// Used in place of the secret of an unknown user so that unknown users
/// and wrong secrets cost the same work.
const DUMMY_SECRET: &[u8] = b"chap-unknown-user-dummy-secret";

enum State {
    /// Waiting for the initiator's CHAP_A list.
    Start,
    /// Sent CHAP_A/CHAP_I/CHAP_C, waiting for CHAP_N/CHAP_R.
    AwaitResponse {
        alg: Algorithm,
        id: u8,
        challenge: Vec<u8>,
    },
    Done,
    Failed,
}

/// The target side of CHAP: authenticates the initiator, and answers the
/// initiator's challenge when it asks for mutual CHAP.
pub struct TargetChap {
    lookup: SecretLookup,
    /// The target's own name and secret for mutual CHAP.
    mutual: Option<Credentials>,
    allowed: Vec<Algorithm>,
    challenge_len: usize,
    policy: SecretPolicy,
    rng: Box<dyn RngCore + Send>,
    state: State,
    /// The CHAP_N that authenticated successfully.
    authenticated_user: Option<String>,
}

impl fmt::Debug for TargetChap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetChap")
            .field(
                "mutual_user",
                &self.mutual.as_ref().map(|m| m.user.as_str()),
            )
            .field("allowed", &self.allowed)
            .field("challenge_len", &self.challenge_len)
            .field("authenticated_user", &self.authenticated_user)
            .finish_non_exhaustive()
    }
}

impl TargetChap {
    /// `lookup`: CHAP_N → secret. `mutual`: the target's own credentials,
    /// used when the initiator asks for mutual CHAP. `allowed`: algorithms
    /// this target accepts (the initiator's order decides among them).
    /// `challenge_len`: 16..=1024 bytes, raised to the digest length.
    pub fn new(
        lookup: SecretLookup,
        mutual: Option<Credentials>,
        allowed: Vec<Algorithm>,
        challenge_len: usize,
    ) -> Result<Self, ChapError> {
        Self::with_policy(
            lookup,
            mutual,
            allowed,
            challenge_len,
            SecretPolicy::default(),
        )
    }

    /// Like [`TargetChap::new`] with an explicit secret policy, applied to
    /// the target's own secret and to every secret `lookup` returns.
    pub fn with_policy(
        lookup: SecretLookup,
        mutual: Option<Credentials>,
        allowed: Vec<Algorithm>,
        challenge_len: usize,
        policy: SecretPolicy,
    ) -> Result<Self, ChapError> {
        if allowed.is_empty() {
            return Err(ChapError::NoAlgorithms);
        }
        check_challenge_len(challenge_len)?;
        if let Some(m) = &mutual {
            m.validate(policy)?;
        }
        Ok(TargetChap {
            lookup,
            mutual,
            allowed,
            challenge_len,
            policy,
            rng: Box::new(OsRng),
            state: State::Start,
            authenticated_user: None,
        })
    }

    /// Use this CSPRNG instead of the OS one (for deterministic tests).
    pub fn with_rng<R: RngCore + CryptoRng + Send + 'static>(mut self, rng: R) -> Self {
        self.rng = Box::new(rng);
        self
    }

    /// The CHAP_N that proved its identity, once authentication succeeded.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.authenticated_user.as_deref()
    }

    fn on_algorithms(&mut self, received: &[KeyValue]) -> Result<AuthStep, AuthFailure> {
        let offer = require_key(received, CHAP_A)?;
        // List negotiation (RFC 7143 §6.2): take the first value of the
        // initiator's list that we accept; unknown values are skipped.
        let alg = offer
            .split(',')
            .filter_map(Algorithm::parse)
            .find(|a| self.allowed.contains(a))
            .ok_or_else(|| {
                AuthFailure::Protocol(format!(
                    "no acceptable CHAP algorithm in CHAP_A={offer:.64} (accepted: {})",
                    Algorithm::list(&self.allowed)
                ))
            })?;
        let id = (self.rng.next_u32() & 0xff) as u8;
        let mut challenge = vec![0u8; effective_challenge_len(self.challenge_len, alg)];
        self.rng.fill_bytes(&mut challenge);
        let out = vec![
            kv(CHAP_A, alg.code().to_string()),
            kv(CHAP_I, id.to_string()),
            kv(CHAP_C, encode_binary(&challenge)),
        ];
        self.state = State::AwaitResponse { alg, id, challenge };
        Ok(AuthStep::Continue(out))
    }

    fn on_response(
        &mut self,
        received: &[KeyValue],
        alg: Algorithm,
        id: u8,
        challenge: &[u8],
    ) -> Result<AuthStep, AuthFailure> {
        let user = require_key(received, CHAP_N)?;
        if validate_user(user).is_err() {
            return Err(AuthFailure::Protocol(format!(
                "CHAP_N must be 1..={MAX_USER_LEN} bytes without NUL"
            )));
        }
        let r = decode_binary(require_key(received, CHAP_R)?, MAX_BINARY_LEN)
            .map_err(|e| AuthFailure::Protocol(format!("CHAP_R: {e}")))?;
        let peer_i = find_key(received, CHAP_I)?;
        let peer_c = find_key(received, CHAP_C)?;

        // Verify the initiator first. Unknown user and wrong secret take the
        // same path and give the same answer.
        let secret = (self.lookup)(user);
        let known = secret.is_some();
        let secret = secret.unwrap_or_else(|| DUMMY_SECRET.to_vec());
        let expected = response(alg, id, &secret, challenge);
        let matches = bool::from(r.ct_eq(&expected));
        if !(known && matches) {
            return Err(AuthFailure::AuthenticationFailed(
                "initiator failed CHAP authentication".into(),
            ));
        }
        if let Err(e) = self.policy.check(&secret) {
            return Err(AuthFailure::AuthenticationFailed(format!(
                "secret configured for this CHAP user is refused by policy: {e}"
            )));
        }
        if let Some(m) = &self.mutual {
            // RFC 7143 §9.2.1: the same secret in both directions "MUST be
            // treated as an authentication failure".
            let mirrored = response(alg, id, &m.secret, challenge);
            if bool::from(r.ct_eq(&mirrored)) {
                return Err(AuthFailure::AuthenticationFailed(
                    "initiator and target use the same CHAP secret (RFC 7143 §9.2.1)".into(),
                ));
            }
        }
        self.authenticated_user = Some(user.to_string());

        let (peer_i, peer_c) = match (peer_i, peer_c) {
            (None, None) => return Ok(AuthStep::Done(Vec::new())),
            (Some(i), Some(c)) => (i, c),
            _ => {
                return Err(AuthFailure::Protocol(
                    "mutual CHAP needs both CHAP_I and CHAP_C".into(),
                ))
            }
        };
        let Some(m) = &self.mutual else {
            return Err(AuthFailure::AuthenticationFailed(
                "initiator requested mutual CHAP but the target has no credentials for it".into(),
            ));
        };
        let peer_id = parse_identifier(peer_i).map_err(|e| AuthFailure::Protocol(e.to_string()))?;
        let peer_challenge = decode_binary(peer_c, MAX_BINARY_LEN)
            .map_err(|e| AuthFailure::Protocol(format!("CHAP_C: {e}")))?;
        // RFC 7143 §9.2.1: "Responders MUST check for this condition [the
        // originator reusing the responder's challenge] and close the iSCSI
        // TCP connection if it occurs."
        if bool::from(peer_challenge.ct_eq(challenge)) {
            return Err(AuthFailure::Protocol(
                "initiator reflected the target's CHAP challenge (RFC 7143 §9.2.1)".into(),
            ));
        }
        let ours = response(alg, peer_id, &m.secret, &peer_challenge);
        Ok(AuthStep::Done(vec![
            kv(CHAP_N, m.user.clone()),
            kv(CHAP_R, encode_binary(&ours)),
        ]))
    }
}

impl Authenticator for TargetChap {
    fn method(&self) -> &str {
        "CHAP"
    }

    fn step(&mut self, received: &[KeyValue]) -> AuthStep {
        let result = match std::mem::replace(&mut self.state, State::Failed) {
            State::Start => self.on_algorithms(received),
            State::AwaitResponse { alg, id, challenge } => {
                let r = self.on_response(received, alg, id, &challenge);
                if r.is_ok() {
                    self.state = State::Done;
                }
                r
            }
            State::Done => {
                self.state = State::Done;
                if received.iter().any(|(k, _)| k.starts_with("CHAP_")) {
                    Err(AuthFailure::Protocol(
                        "CHAP keys received after authentication completed".into(),
                    ))
                } else {
                    Ok(AuthStep::Done(Vec::new()))
                }
            }
            State::Failed => Err(AuthFailure::Protocol(
                "authentication already failed".into(),
            )),
        };
        match result {
            Ok(step) => step,
            Err(f) => {
                self.state = State::Failed;
                AuthStep::Failed(f)
            }
        }
    }
}
