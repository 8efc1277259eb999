//! The initiator daemon's side of the stack (the iscsid of this stack).
//! Node records ([`nodes`]) are files that discovery and `iscsi node` edit
//! directly and that the daemon reads at login.
//!
//! - [`paths`]: default state directory and socket.
//! - [`nodes`]: the node database.

pub mod nodes;
pub mod paths;
