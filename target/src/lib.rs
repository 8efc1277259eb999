//! The iSCSI target: portals, login, sessions (MC/S), the SCSI device server
//! and its backends. The full-feature rules (CmdSN window, StatSN stamping,
//! Data-In/Data-Out segmentation) are `proto::session`'s; this crate is the
//! tokio shell around them.

pub mod admin;
pub mod backend;
pub mod config;
pub mod config_file;
pub mod conn;
pub mod device;
pub mod discovery;
pub mod limits;
pub mod login;
pub mod portal;
pub mod scsi;
pub mod server;
pub mod session;
mod sync;
pub mod tmf;
