//! The initiator's error type: one enum for the whole crate, with a coarse
//! [`ErrorKind`] that the CLI maps to exit codes (0 ok, 1 refused/failed,
//! 2 usage, 3 unreachable).
//!
//! Protocol and login errors are typed ([`ProtocolError`], [`LoginFailure`])
//! and keep what caused them as [`std::error::Error::source`] (the PDU
//! decode error, the login machine's error, the Data-In/R2T sequence check
//! of `proto::session`). Their `Display` already includes the cause, so
//! the CLI, which prints one line, says the whole story.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use proto::login::auth::AuthFailure;
use proto::login::LoginError;
use proto::pdu::{DecodeError, LogoutResponseCode, Opcode, RejectReason, TmfFunction};
use proto::scsi::sense::Sense;
use proto::scsi::{ControlError, Status};
use proto::session::initiator::{CommandError, ConnError};
use proto::text::TextError;

/// The spec name of a SCSI status byte (SAM-5 §5.3.1), for messages.
pub fn status_name(status: u8) -> &'static str {
    Status(status).name().unwrap_or("unknown status")
}

/// A SCSI command completed with a status other than GOOD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiError {
    /// The SCSI status byte.
    pub status: u8,
    /// Decoded sense data, when the target sent parseable sense.
    pub sense: Option<Sense>,
    /// The raw sense bytes as received (without the 2-byte length prefix).
    pub raw_sense: Bytes,
}

impl fmt::Display for ScsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCSI status {} ({:#04x})",
            status_name(self.status),
            self.status
        )?;
        if let Some(s) = &self.sense {
            write!(f, ", sense key {:?}, {:?}", s.key, s.asc)?;
        }
        Ok(())
    }
}

impl std::error::Error for ScsiError {}

/// Coarse classification used for exit codes and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad arguments (exit code 2).
    Usage,
    /// The target refused or a command failed (exit code 1).
    Failed,
    /// The target could not be reached or stopped answering (exit code 3).
    Unreachable,
}

/// Everything that can go wrong in the initiator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid argument or configuration.
    #[error("{0}")]
    Usage(String),
    /// TCP connect refused / timed out / name resolution failed.
    #[error("{0}")]
    Unreachable(String),
    /// The peer stopped answering within a bounded time.
    #[error("timed out: {0}")]
    Timeout(#[source] TimedOut),
    /// The connection closed or failed.
    #[error("connection lost: {0}")]
    ConnectionLost(#[source] Lost),
    /// Login Response with a non-success status (RFC 7143 §11.13.5).
    #[error(
        "login refused by the target: {message} (status class {class:#04x} detail {detail:#04x})"
    )]
    LoginRefused {
        class: u8,
        detail: u8,
        message: String,
    },
    /// Authentication failed on our side (e.g. mutual CHAP: the target did
    /// not prove the secret) or the negotiation broke the protocol.
    #[error("login failed: {0}")]
    Login(#[from] LoginFailure),
    /// The target violated the protocol or sent data we cannot use.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// SCSI status other than GOOD.
    #[error("{0}")]
    Scsi(ScsiError),
    /// The iSCSI layer rejected the command (Reject PDU, or SCSI Response
    /// with a response code other than "Command Completed at Target").
    #[error("command rejected: {0}")]
    Rejected(#[source] Rejection),
    /// A task management function did not succeed.
    #[error("task management: {0}")]
    TaskManagement(String),
    /// The session could not be recovered within the recovery timeout
    /// (the last reconnect error, as logged).
    #[error("session failed: {0}")]
    SessionFailed(String),
    /// The session was closed by the caller (logout).
    #[error("session closed")]
    Closed,
    /// Operation not supported by this LUN (e.g. UNMAP without LBP).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A local I/O step failed (e.g. the demo's NBD check).
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A task of ours ended without giving its result (a bug or a panic).
    #[error("{0} ended without a result")]
    TaskLost(&'static str),
}

/// What timed out (RFC 7143 leaves the times to the implementation).
#[derive(Debug, thiserror::Error)]
pub enum TimedOut {
    /// No Login Response from a portal within the login timeout.
    #[error("no Login Response from {portal} within {limit:?}")]
    Login { portal: String, limit: Duration },
    /// No answer to a request PDU (e.g. "Logout Response", "Text Response
    /// to SendTargets").
    #[error("no {0}")]
    NoAnswer(&'static str),
    /// No answer to a task management function.
    #[error("no response to {0:?}")]
    TaskManagement(TmfFunction),
    /// A command the session gave up on (command timeout, CmdSN window
    /// kept closed).
    #[error(transparent)]
    Command(CommandError),
    /// A whole operation ran past its deadline.
    #[error("{what} did not finish within {limit:?}")]
    Deadline { what: &'static str, limit: Duration },
    /// Logging out (flush, NBD clients, Logout) did not finish cleanly.
    #[error("{0}")]
    Logout(String),
}

/// How a connection or session went away.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    /// Reading or writing the socket failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The target closed the connection.
    #[error("connection closed by the target")]
    ClosedByTarget,
    /// No connection is up (recovering, closing).
    #[error("session is not up")]
    NotUp,
    /// The connection closed while an exchange waited for its answer.
    #[error("connection closed during {0}")]
    During(&'static str),
    /// The session failed and was not recovered (recovery timeout 0, or
    /// shut down): the reason as logged.
    #[error("{0}")]
    Failed(String),
}

/// What the target rejected.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// A Reject PDU answered SendTargets (RFC 7143 §11.17).
    #[error("SendTargets rejected: {0:?}")]
    SendTargets(RejectReason),
    /// A command failed at the iSCSI layer (Reject, or a SCSI Response
    /// whose response code is not "completed at target").
    #[error(transparent)]
    Command(CommandError),
}

/// Why a login failed on our side (the target's refusals are
/// [`Error::LoginRefused`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginFailure {
    /// RFC 7143 §11.13.5: we follow at most a few redirections.
    #[error("too many login redirections")]
    TooManyRedirects,
    /// The target answered a Login Request with another PDU.
    #[error("expected a Login Response, got opcode {0:?}")]
    UnexpectedPdu(Opcode),
    /// A redirection whose TargetAddress does not parse.
    #[error("bad redirection: {0}")]
    BadRedirect(#[source] TextError),
    /// Authentication failed (e.g. mutual CHAP: the target did not prove
    /// the secret).
    #[error("authentication failed: {0}")]
    Auth(#[source] AuthFailure),
    /// The login exchange broke (negotiation, text, stage rules).
    #[error("{0}")]
    Exchange(#[source] LoginError),
}

/// How the target broke the protocol, or sent data we cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A PDU from the target did not decode (RFC 7143 §11).
    #[error("bad PDU from target: {0}")]
    Decode(#[source] DecodeError),
    /// The target broke a full-feature rule that fails the connection
    /// (the check of `proto::session::initiator`, as it reported it).
    #[error(transparent)]
    Connection(ConnError),
    /// The target broke a rule that fails only this command.
    #[error(transparent)]
    Command(CommandError),
    /// RFC 7143 §11.15.1: the target did not close the session.
    #[error("logout refused: {0:?}")]
    LogoutRefused(LogoutResponseCode),
    /// The SendTargets exchange went on for too many rounds.
    #[error("SendTargets exchange did not end")]
    DiscoveryEndless,
    /// A PDU other than a Text Response or Reject during discovery.
    #[error("unexpected {0:?} during discovery")]
    DiscoveryUnexpected(Opcode),
    /// The SendTargets text data is malformed.
    #[error("SendTargets text: {0}")]
    SendTargetsText(#[source] TextError),
    /// The SendTargets answer has more records than we accept.
    #[error("SendTargets answer too long")]
    SendTargetsTooLong,
    /// The SendTargets records do not parse (RFC 7143 §12.3).
    #[error("SendTargets answer: {0}")]
    SendTargetsAnswer(#[source] TextError),
    /// SCSI parameter data shorter than its format (`what`: the command).
    #[error("short {0} data")]
    ShortData(&'static str),
    /// SPC-5 §7.8.1: the page code in the answer is not the one asked for.
    #[error("the target did not return VPD page {0:#04x}")]
    WrongVpdPage(u8),
    /// READ CAPACITY gave a block size of 0 or above our limit.
    #[error("LUN reports an unusable block size of {0} bytes")]
    BlockSize(u32),
    /// A READ returned fewer bytes than asked for.
    #[error("READ returned {got} of {want} bytes")]
    ShortRead { got: usize, want: u32 },
    /// The control channel's data does not decode (`what`: which data).
    #[error("the target's {what}: {source}")]
    Control {
        what: &'static str,
        #[source]
        source: ControlError,
    },
    /// The target answered GET for a switch without listing it.
    #[error("the target answered GET {0} without it")]
    MissingSwitch(String),
}

impl Error {
    /// Coarse kind, for exit codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::Unreachable(_)
            | Error::Timeout(_)
            | Error::ConnectionLost(_)
            | Error::SessionFailed(_) => ErrorKind::Unreachable,
            _ => ErrorKind::Failed,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use proto::scsi::sense::{Asc, SenseKey};

    #[test]
    fn kinds() {
        assert_eq!(
            Error::Unreachable("x".into()).kind(),
            ErrorKind::Unreachable
        );
        let t = Error::Timeout(TimedOut::NoAnswer("Logout Response"));
        assert_eq!(t.kind(), ErrorKind::Unreachable);
        assert_eq!(t.to_string(), "timed out: no Logout Response");
        assert_eq!(Error::Usage("x".into()).kind(), ErrorKind::Usage);
        let e = Error::LoginRefused {
            class: 2,
            detail: 3,
            message: "not found".into(),
        };
        assert_eq!(e.kind(), ErrorKind::Failed);
        assert!(e.to_string().contains("not found"));
    }

    #[test]
    fn typed_errors_keep_their_cause_and_their_text() {
        use std::error::Error as _;
        let d = DecodeError::DataSegmentTooLong {
            len: 9000,
            max: 8192,
        };
        let e = Error::from(ProtocolError::Decode(d.clone()));
        assert_eq!(e.kind(), ErrorKind::Failed);
        let s = e.to_string();
        assert!(
            s.starts_with("protocol error: bad PDU from target: "),
            "{s}"
        );
        assert!(s.contains("8192"), "{s}");
        let cause = e.source().and_then(|p| p.source()).expect("decode cause");
        assert_eq!(cause.downcast_ref::<DecodeError>(), Some(&d));

        let l = LoginError::TooManyRoundTrips(64);
        let e = Error::from(LoginFailure::Exchange(l.clone()));
        assert_eq!(e.kind(), ErrorKind::Failed);
        assert!(e.to_string().starts_with("login failed: "), "{e}");
        assert!(e.to_string().contains("64 PDUs"), "{e}");
        let cause = e.source().and_then(|p| p.source()).expect("login cause");
        assert_eq!(cause.downcast_ref::<LoginError>(), Some(&l));
    }

    #[test]
    fn scsi_error_display_names_status_and_sense() {
        let e = ScsiError {
            status: Status::CHECK_CONDITION.0,
            sense: Some(Sense::new(SenseKey::ILLEGAL_REQUEST, Asc::new(0x24, 0))),
            raw_sense: Bytes::new(),
        };
        let s = e.to_string();
        assert!(s.contains("CHECK CONDITION"), "{s}");
        assert!(s.contains("ILLEGAL"), "{s}");
    }
}
