//! CHAP, initiator role (RFC 7143 §12.1.3).

use core::fmt;

use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;

use crate::keys::{CHAP_A, CHAP_C, CHAP_I, CHAP_N, CHAP_R};
use crate::{
    check_challenge_len, decode_binary, effective_challenge_len, encode_binary, kv,
    parse_identifier, require_key, response, Algorithm, AuthFailure, AuthStep, Authenticator,
    ChapError, Credentials, KeyValue, SecretPolicy, DEFAULT_CHALLENGE_LEN,
    DEFAULT_INITIATOR_PREFERENCE, MAX_BINARY_LEN,
};

enum State {
    /// Nothing sent yet.
    Start,
    /// Sent CHAP_A, waiting for CHAP_A/CHAP_I/CHAP_C.
    AwaitChallenge,
    /// Mutual: sent our CHAP_I/CHAP_C, waiting for the target's CHAP_N/CHAP_R.
    AwaitTargetResponse {
        alg: Algorithm,
        id: u8,
        challenge: Vec<u8>,
    },
    /// Finished (successfully).
    Done,
    /// Failed; every further step fails.
    Failed,
}

/// The initiator side of CHAP, optionally authenticating the target too.
pub struct InitiatorChap {
    creds: Credentials,
    /// What the target must prove it knows (mutual CHAP), if anything.
    mutual: Option<Credentials>,
    prefs: Vec<Algorithm>,
    challenge_len: usize,
    rng: Box<dyn RngCore + Send>,
    state: State,
}

impl fmt::Debug for InitiatorChap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitiatorChap")
            .field("user", &self.creds.user)
            .field(
                "mutual_user",
                &self.mutual.as_ref().map(|m| m.user.as_str()),
            )
            .field("prefs", &self.prefs)
            .finish_non_exhaustive()
    }
}

impl InitiatorChap {
    /// `creds`: our CHAP_N and secret. `mutual`: the name and secret the
    /// target must answer with (enables mutual CHAP). Secrets are checked
    /// against [`SecretPolicy::Rfc7143`].
    pub fn new(creds: Credentials, mutual: Option<Credentials>) -> Result<Self, ChapError> {
        Self::with_policy(creds, mutual, SecretPolicy::default())
    }

    /// Like [`InitiatorChap::new`] with an explicit secret policy.
    pub fn with_policy(
        creds: Credentials,
        mutual: Option<Credentials>,
        policy: SecretPolicy,
    ) -> Result<Self, ChapError> {
        creds.validate(policy)?;
        if let Some(m) = &mutual {
            m.validate(policy)?;
            // RFC 7143 §9.2.1: "Any CHAP secret used for initiator
            // authentication MUST NOT be configured for the authentication of
            // any target".
            if bool::from(m.secret.ct_eq(&creds.secret)) {
                return Err(ChapError::SameSecretBothDirections);
            }
        }
        Ok(InitiatorChap {
            creds,
            mutual,
            prefs: DEFAULT_INITIATOR_PREFERENCE.to_vec(),
            challenge_len: DEFAULT_CHALLENGE_LEN,
            rng: Box::new(OsRng),
            state: State::Start,
        })
    }

    /// Offer these algorithms, most preferred first, instead of
    /// [`DEFAULT_INITIATOR_PREFERENCE`]. Duplicates are dropped.
    pub fn with_algorithm_preference(mut self, prefs: Vec<Algorithm>) -> Result<Self, ChapError> {
        let mut dedup = Vec::with_capacity(prefs.len());
        for a in prefs {
            if !dedup.contains(&a) {
                dedup.push(a);
            }
        }
        if dedup.is_empty() {
            return Err(ChapError::NoAlgorithms);
        }
        self.prefs = dedup;
        Ok(self)
    }

    /// Length of the challenge we send in mutual CHAP (16..=1024, raised to
    /// the digest length if smaller).
    pub fn with_challenge_len(mut self, len: usize) -> Result<Self, ChapError> {
        check_challenge_len(len)?;
        self.challenge_len = len;
        Ok(self)
    }

    /// Use this CSPRNG instead of the OS one (for deterministic tests).
    pub fn with_rng<R: RngCore + CryptoRng + Send + 'static>(mut self, rng: R) -> Self {
        self.rng = Box::new(rng);
        self
    }

    /// The algorithms offered, in order.
    pub fn algorithm_preference(&self) -> &[Algorithm] {
        &self.prefs
    }

    fn on_challenge(&mut self, received: &[KeyValue]) -> Result<AuthStep, AuthFailure> {
        let a = require_key(received, CHAP_A)?;
        if a == "Reject" {
            return Err(AuthFailure::Protocol(format!(
                "target rejected every offered CHAP algorithm (CHAP_A={})",
                Algorithm::list(&self.prefs)
            )));
        }
        // RFC 7143 §12.1.3: the target answers "CHAP_A=<A>", one value that was
        // proposed by the initiator.
        let alg = Algorithm::parse(a)
            .filter(|alg| self.prefs.contains(alg))
            .ok_or_else(|| {
                AuthFailure::Protocol(format!(
                    "target chose CHAP_A={a:.16}, which is not one value of our offer {}",
                    Algorithm::list(&self.prefs)
                ))
            })?;
        let id = parse_identifier(require_key(received, CHAP_I)?)
            .map_err(|e| AuthFailure::Protocol(e.to_string()))?;
        let challenge = decode_binary(require_key(received, CHAP_C)?, MAX_BINARY_LEN)
            .map_err(|e| AuthFailure::Protocol(format!("CHAP_C: {e}")))?;
        let r = response(alg, id, &self.creds.secret, &challenge);
        let mut out = vec![
            kv(CHAP_N, self.creds.user.clone()),
            kv(CHAP_R, encode_binary(&r)),
        ];
        if self.mutual.is_none() {
            self.state = State::Done;
            return Ok(AuthStep::Done(out));
        }
        let our_id = (self.rng.next_u32() & 0xff) as u8;
        let len = effective_challenge_len(self.challenge_len, alg);
        let mut ours = vec![0u8; len];
        // RFC 7143 §9.2.1: "Originators MUST NOT reuse the CHAP challenge sent
        // by the Responder for the other direction".
        let mut tries = 0;
        loop {
            self.rng.fill_bytes(&mut ours);
            if ours != challenge {
                break;
            }
            tries += 1;
            if tries == 8 {
                return Err(AuthFailure::Protocol(
                    "random generator keeps producing the target's challenge".into(),
                ));
            }
        }
        out.push(kv(CHAP_I, our_id.to_string()));
        out.push(kv(CHAP_C, encode_binary(&ours)));
        self.state = State::AwaitTargetResponse {
            alg,
            id: our_id,
            challenge: ours,
        };
        Ok(AuthStep::Continue(out))
    }

    fn on_target_response(
        &self,
        received: &[KeyValue],
        alg: Algorithm,
        id: u8,
        challenge: &[u8],
    ) -> Result<AuthStep, AuthFailure> {
        let Some(mutual) = &self.mutual else {
            return Err(AuthFailure::Protocol(
                "internal: no mutual credentials".into(),
            ));
        };
        let n = require_key(received, CHAP_N)?;
        let r = decode_binary(require_key(received, CHAP_R)?, MAX_BINARY_LEN)
            .map_err(|e| AuthFailure::Protocol(format!("CHAP_R: {e}")))?;
        // RFC 7143 §9.2.1: a response equal to the one we would have computed
        // with our own secret "MUST be treated as an authentication failure".
        let mirrored = response(alg, id, &self.creds.secret, challenge);
        if bool::from(r.ct_eq(&mirrored)) {
            return Err(AuthFailure::AuthenticationFailed(
                "target answered with the initiator's own secret (RFC 7143 §9.2.1)".into(),
            ));
        }
        let expected = response(alg, id, &mutual.secret, challenge);
        let name_ok = n.as_bytes().ct_eq(mutual.user.as_bytes());
        let resp_ok = r.ct_eq(&expected);
        if bool::from(name_ok & resp_ok) {
            Ok(AuthStep::Done(Vec::new()))
        } else {
            Err(AuthFailure::AuthenticationFailed(
                "target failed mutual CHAP authentication".into(),
            ))
        }
    }
}

impl Authenticator for InitiatorChap {
    fn method(&self) -> &str {
        "CHAP"
    }

    fn step(&mut self, received: &[KeyValue]) -> AuthStep {
        let result = match std::mem::replace(&mut self.state, State::Failed) {
            State::Start => {
                // The first call carries nothing from the target; anything
                // CHAP-related at this point is out of order.
                if received.iter().any(|(k, _)| k.starts_with("CHAP_")) {
                    Err(AuthFailure::Protocol(
                        "CHAP keys received before CHAP_A was offered".into(),
                    ))
                } else {
                    self.state = State::AwaitChallenge;
                    Ok(AuthStep::Continue(vec![kv(
                        CHAP_A,
                        Algorithm::list(&self.prefs),
                    )]))
                }
            }
            State::AwaitChallenge => self.on_challenge(received),
            State::AwaitTargetResponse { alg, id, challenge } => {
                let r = self.on_target_response(received, alg, id, &challenge);
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
