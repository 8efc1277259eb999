//! The initiator's error type: one enum for the whole crate, with a coarse
//! [`ErrorKind`] that the CLI maps to exit codes (0 ok, 1 refused/failed,
//! 2 usage, 3 unreachable).

use std::fmt;

use bytes::Bytes;
use proto::scsi::sense::Sense;
use proto::scsi::Status;

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
    Timeout(String),
    /// The connection closed or failed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
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
    Login(String),
    /// The peer violated the protocol in full-feature phase.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// SCSI status other than GOOD.
    #[error("{0}")]
    Scsi(ScsiError),
    /// The iSCSI layer rejected the command (Reject PDU, or SCSI Response
    /// with a response code other than "Command Completed at Target").
    #[error("command rejected: {0}")]
    Rejected(String),
    /// A task management function did not succeed.
    #[error("task management: {0}")]
    TaskManagement(String),
    /// The session could not be recovered within the recovery timeout.
    #[error("session failed: {0}")]
    SessionFailed(String),
    /// The session was closed by the caller (logout).
    #[error("session closed")]
    Closed,
    /// Operation not supported by this LUN (e.g. UNMAP without LBP).
    #[error("not supported: {0}")]
    Unsupported(String),
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
        assert_eq!(Error::Timeout("x".into()).kind(), ErrorKind::Unreachable);
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
