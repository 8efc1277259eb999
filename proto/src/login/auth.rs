//! The security-stage hand-off (RFC 7143 §6.2, §12): the login state machine
//! knows *when* authentication keys are exchanged; an [`Authenticator`]
//! (implemented by the `chap` crate) knows *what* they say.

/// A text key and its value, in the order they appear on the wire.
pub type KeyValue = (String, String);

/// One side of an authentication exchange (initiator or target role).
///
/// The login state machine calls [`Authenticator::step`] with the
/// authentication keys (everything except `AuthMethod` and the declarative
/// keys such as `InitiatorName`) that the peer sent in its last Login PDU,
/// and sends back what the authenticator returns.
///
/// Initiator role: the first call (right after `AuthMethod` is agreed) gets
/// an empty slice and returns the opening keys (e.g. `CHAP_A=7,5`).
/// Target role: the first call gets the keys of the first Login Request that
/// follows the `AuthMethod` agreement.
pub trait Authenticator: Send {
    /// The `AuthMethod` value this authenticator implements, e.g. `"CHAP"`.
    fn method(&self) -> &str;

    /// Consume the peer's keys, produce ours.
    fn step(&mut self, received: &[KeyValue]) -> AuthStep;
}

/// What an [`Authenticator`] wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send these keys and expect more from the peer.
    Continue(Vec<KeyValue>),
    /// This side is satisfied; send these final keys (possibly none). The
    /// login may leave the security stage once both sides are done.
    Done(Vec<KeyValue>),
    /// Authentication failed; the login must end.
    Failed(AuthFailure),
}

/// Why authentication failed; maps to Login Response status (RFC 7143 §11.13.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// The peer did not prove its identity (wrong secret, unknown user):
    /// status class 2, detail 0x01 "Authentication failure".
    AuthenticationFailed(String),
    /// The peer asked for something we do not support or violated the
    /// protocol (missing key, reflected challenge, bad encoding): status
    /// class 2, detail 0x00 "Initiator error".
    Protocol(String),
}

impl core::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AuthFailure::AuthenticationFailed(m) => write!(f, "authentication failed: {m}"),
            AuthFailure::Protocol(m) => write!(f, "authentication protocol error: {m}"),
        }
    }
}

impl std::error::Error for AuthFailure {}
