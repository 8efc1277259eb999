//! Sans-IO core of the iSCSI stack (RFC 7143).
//!
//! No sockets, no runtime, no clock, no RNG: callers pass time and randomness
//! in. Everything the target and the initiator must agree on lives here.
#![forbid(unsafe_code)]

pub mod digest;
pub mod login;
pub mod name;
pub mod pdu;
pub mod scsi;
pub mod serial;
pub mod text;

#[cfg(feature = "codec")]
pub mod codec;
