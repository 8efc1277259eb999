//! The iSCSI target: portals, login, sessions (MC/S), the SCSI device server
//! and its backends. The full-feature rules (CmdSN window, StatSN stamping,
//! Data-In/Data-Out segmentation) are `proto::session`'s; this crate is the
//! tokio shell around them.
//!
//! | module | what | reference |
//! |---|---|---|
//! | [`server`] | the running target: portals, session table, targets and their device servers; start-up, graceful shutdown | |
//! | [`portal`] | TCP listeners for the configured addresses (IPv4, IPv6) | RFC 7143 §4.4.1 |
//! | [`login`] | the login phase over a socket: `proto`'s `TargetLogin`, CHAP, ACLs, session join | RFC 7143 §6, §12 |
//! | [`conn`] | one connection's full-feature phase: the driver around `proto::session::target::TargetConn`, inline cached I/O, vectored writes | RFC 7143 §4, §11 |
//! | [`session`] | sessions keyed by (initiator, ISID, TSIH), MC/S, the session-wide CmdSN window and task table | RFC 7143 §4.4, §6.3 |
//! | [`tmf`] | task management functions | RFC 7143 §11.5; SAM-5 §7 |
//! | [`discovery`] | SendTargets: which targets and portals an initiator is told about | RFC 7143 §13.3, App. C |
//! | [`device`] | the seam between transport and device server (one request/outcome type) | SAM-5 §4.5 |
//! | [`scsi`] | the SCSI device server: LUs, command dispatch by family, reservations, control channel | SBC-4, SPC-5 |
//! | [`backend`] | storage behind one trait: file, block, memory, null, rbd | |
//! | [`config`], [`config_file`] | configuration structs; the JSON file, path-accurate errors, save | |
//! | [`limits`] | admission caps checked at login | |
//! | [`admin`] | the admin API on a unix socket (`iscsi target ...`) | |
//! | `sync` | the crate's one lock helper | |

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
