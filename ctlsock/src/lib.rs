//! Control sockets: what the target's admin API and the initiator daemon
//! (`iscsi daemon`) share, so that it is written once.
//!
//! - [`server`]: serve newline-delimited requests on a unix socket created
//!   mode 0600 in a directory owned by us, for our own user and root only,
//!   with a bounded request size, a read timeout, a client cap, and a
//!   connection that survives garbage (the caller's [`server::Handler`]
//!   answers every line, parseable or not).
//! - [`client`]: the blocking one-request, one-response client the CLI uses,
//!   with a bounded response and timeouts.
//! - [`json`]: JSON requests and `{"ok":..}` responses on top of
//!   [`server`], for a service that names its request type and error kinds.
//! - [`file`]: atomic, private file writes (temporary file, fsync, rename,
//!   directory fsync) for configuration and state files.
//!
//! The wire content (JSON requests and responses) belongs to each user of
//! this crate; here only lines move.
#![deny(unsafe_code)]

pub mod client;
pub mod file;
pub mod json;
pub mod server;

pub use client::{call, call_with_progress, CallError};
pub use file::save_atomic;
pub use server::{listen, ControlSocket, Handler, Limits, Progress, Refusal, SocketError};

/// The effective user id of this process.
#[allow(unsafe_code)]
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Is this process running as root?
pub fn is_root() -> bool {
    euid() == 0
}
