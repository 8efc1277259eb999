//! Sans-IO core of the iSCSI stack (RFC 7143).
//!
//! No sockets, no runtime, no clock, no RNG: callers pass time and randomness
//! in. Everything the target and the initiator must agree on lives here.
//!
//! - [`pdu`]: PDU codec (BHS/AHS, digests, framing), RFC 7143 §11.
//! - [`codec`]: `tokio_util` Decoder/Encoder over [`pdu`] (feature `codec`).
//! - [`digest`]: CRC32C header/data digests.
//! - [`serial`]: RFC 1982 sequence numbers (CmdSN, StatSN, DataSN, R2TSN).
//! - [`text`]: text keys, negotiation, SendTargets (§6, §13).
//! - [`login`]: login state machines for both roles (§6, §11.12-13).
//! - [`session`]: the full-feature phase rules (§4.2, §11): CmdSN window,
//!   StatSN stamping, tags, Data-In/Data-Out segmentation and checks, and
//!   the sans-IO cores of both roles (`session::target`,
//!   `session::initiator`).
//! - [`scsi`]: CDBs, sense data, status, INQUIRY/VPD, mode pages, LUNs.
//! - [`name`]: iSCSI names (iqn./eui./naa.).
#![forbid(unsafe_code)]

pub mod digest;
pub mod login;
pub mod name;
pub mod pdu;
pub mod scsi;
pub mod serial;
pub mod session;
pub mod text;

#[cfg(feature = "codec")]
pub mod codec;
