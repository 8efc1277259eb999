//! Userspace iSCSI initiator (RFC 7143) on top of the sans-IO `proto` core.
//!
//! - [`portal`]: `HOST[:PORT]` parsing and bounded TCP connects.
//! - [`initiator_name`]: a stable, stored initiator name.
//! - [`transport`]: PDU framing over TCP (vectored writes, bounded reads).
//! - [`connection`]: the login phase of one connection (via `proto::login`).
//! - [`discovery`]: SendTargets discovery sessions.
//! - [`session`]: normal sessions: the tokio shell around
//!   `proto::session::initiator` (which owns the CmdSN window, R2T, Data-In,
//!   NOPs, TMF, allegiance across MC/S), plus async messages and recovery.
//! - [`device`]: LUN scan and the block-device API.
//! - [`control`]: the control channel: I/O tags in reserved CDB bits and
//!   the vendor command's switches (LIST/GET/SET).
//! - [`daemon`]: the initiator daemon (iscsid): node database, sessions and
//!   their NBD exports, JSON API on a unix socket, and its client.
//! - [`nbd`]: an NBD server exporting a session's LUNs.
//! - `ublk` (cargo feature `ublk`, Linux): a LUN as a ublk block device.
//! - [`error`]: the crate's error type and exit-code classification.
//! - `sync`: the one mutex helper (poison-tolerant `lock`).
// No unsafe code, except in the ublk export (feature `ublk`), which needs
// an eventfd (libc) and an io_uring read; there it is allowed per item.
#![cfg_attr(not(feature = "ublk"), forbid(unsafe_code))]
#![cfg_attr(feature = "ublk", deny(unsafe_code))]

pub mod connection;
pub mod control;
pub mod daemon;
pub mod device;
pub mod discovery;
pub mod error;
pub mod initiator_name;
pub mod nbd;
pub mod portal;
pub mod session;
mod sync;
pub mod transport;
#[cfg(all(feature = "ublk", target_os = "linux"))]
pub mod ublk;

pub use bytes;
pub use control::IoTags;
pub use device::{Capacity, LunInfo, ScsiDevice};
pub use discovery::{discover, DiscoveredTarget, DiscoveryConfig};
pub use error::{
    Error, ErrorKind, LoginFailure, Lost, ProtocolError, Rejection, Result, ScsiError, TimedOut,
};
pub use nbd::{NbdExport, NbdExportStats, NbdListen, NbdServer};
pub use portal::Portal;
pub use session::{
    ChapConfig, ConnectionStats, DataDirection, RawResult, Session, SessionConfig, SessionEvent,
};
