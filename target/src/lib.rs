//! The iSCSI target: portals, login, sessions (MC/S), the SCSI device server
//! and its backends.

pub mod backend;
pub mod scsi;
