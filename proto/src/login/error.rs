//! Login errors, for both roles, and their wire status (RFC 7143 §11.13.5).

use thiserror::Error;

use super::auth::AuthFailure;
use super::status::LoginStatus;
use crate::text::negotiate::NegotiationError;
use crate::text::TextError;

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoginError {
    /// Initiator: the target redirected us (status class 1). `addresses`
    /// are the TargetAddress values (`host[:port][,tpgt]`) to try.
    #[error("{status}: try {addresses:?}")]
    Redirect {
        status: LoginStatus,
        permanent: bool,
        addresses: Vec<String>,
    },
    /// Initiator: the target refused the login (status class 2 or 3).
    #[error("login refused by the target: {status}")]
    Refused { status: LoginStatus },
    /// Target: our policy refused the login (unknown target, ACL, session
    /// does not exist, too many connections...).
    #[error("login refused: {status}: {reason}")]
    Denied { status: LoginStatus, reason: String },
    /// Authentication failed (either side).
    #[error(transparent)]
    Auth(#[from] AuthFailure),
    /// Key negotiation failed (either side).
    #[error("negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
    /// Malformed text data segment.
    #[error("malformed login text: {0}")]
    Text(#[from] TextError),
    /// The peer broke a login rule (stage, T/C bits, identifiers...).
    #[error("login protocol violation: {0}")]
    Protocol(String),
    /// A mandatory key is missing (e.g. InitiatorName, TargetName).
    #[error("missing parameter {0}")]
    MissingParameter(&'static str),
    /// The peer kept the login going for too many PDUs.
    #[error("login did not complete within {0} PDUs")]
    TooManyRoundTrips(u32),
}

impl LoginError {
    /// The Login Response status a target sends for this error.
    pub fn login_status(&self) -> LoginStatus {
        match self {
            LoginError::Redirect { status, .. }
            | LoginError::Refused { status }
            | LoginError::Denied { status, .. } => *status,
            LoginError::Auth(AuthFailure::AuthenticationFailed(_)) => {
                LoginStatus::AUTHENTICATION_FAILURE
            }
            LoginError::Auth(AuthFailure::Protocol(_)) => LoginStatus::INITIATOR_ERROR,
            LoginError::MissingParameter(_) => LoginStatus::MISSING_PARAMETER,
            LoginError::Negotiation(_)
            | LoginError::Text(_)
            | LoginError::Protocol(_)
            | LoginError::TooManyRoundTrips(_) => LoginStatus::INITIATOR_ERROR,
        }
    }

    /// Whether retrying the same login later may succeed (redirects and
    /// target-side errors), as opposed to configuration/protocol errors.
    pub fn is_retryable(&self) -> bool {
        let s = self.login_status();
        s.is_redirect() || s.is_target_error()
    }
}
