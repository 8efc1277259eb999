//! Login and text negotiation state machines (RFC 7143 §6, §11.12, §11.13,
//! §13), both roles, sans-IO.
//!
//! - [`InitiatorLogin`]: `start()` → Login Request; `handle_response()` →
//!   next request or [`LoginOutcome`].
//! - [`TargetLogin`]: `handle_request(req, policy)` → response (and the
//!   outcome with the final one), with a [`TargetLoginPolicy`] for target
//!   names, ACLs, authentication and the session table.
//! - [`auth::Authenticator`]: the security-stage hand-off (the `chap` crate).
//! - [`params`]: negotiated results and local configuration.
//!
//! Full-feature-phase Text negotiation and SendTargets live in
//! [`crate::text::discovery`].

pub mod auth;
pub mod error;
pub mod initiator;
pub mod params;
pub mod status;
pub mod target;

pub use error::LoginError;
pub use initiator::{InitiatorLogin, InitiatorLoginConfig, InitiatorStep, ISCSI_VERSION};
pub use params::{ConnectionParams, Digest, OperationalConfig, SessionParams, SessionType};
pub use status::LoginStatus;
pub use target::{
    Admission, LoginIdentity, SessionJoin, TargetLogin, TargetLoginConfig, TargetLoginPolicy,
    TargetStep,
};

use crate::pdu::Isid;
use crate::serial::{CmdSn, StatSn};

/// The result of a successful login, the same shape for both roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    pub isid: Isid,
    /// The session's TSIH (assigned by the target for a new session).
    pub tsih: u16,
    pub cid: u16,
    /// Session-wide parameters. On a connection that joined an existing
    /// session (TSIH != 0), the initiator side only knows the declarative
    /// fields here and must keep the leading connection's values; the
    /// target side returns the session's values from [`SessionJoin`].
    pub session: SessionParams,
    pub connection: ConnectionParams,
    /// StatSN of the final Login Response; the next response on this
    /// connection carries `stat_sn + 1` (so the initiator's ExpStatSN is
    /// `stat_sn + 1`).
    pub stat_sn: StatSn,
    /// ExpCmdSN/MaxCmdSN of the final Login Response.
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    /// CmdSN carried by the Login Requests: login is immediate, so the first
    /// full-feature command uses this same CmdSN.
    pub cmd_sn: CmdSn,
    /// The authentication method that completed (e.g. "CHAP"), or `None`.
    pub auth_method: Option<String>,
}
