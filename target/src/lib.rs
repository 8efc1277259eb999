//! The iSCSI target: portals, login, sessions (MC/S), the SCSI device server
//! and its backends.

pub mod admin;
pub mod backend;
pub mod config;
pub mod config_file;
pub mod conn;
pub mod device;
pub mod discovery;
pub mod login;
pub mod portal;
pub mod scsi;
pub mod server;
pub mod session;
pub mod tmf;
pub mod window;
