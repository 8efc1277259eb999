//! The target's JSON configuration file (`iscsi target serve --config FILE`):
//! schema, loading with path-accurate errors, mapping onto the runtime
//! structs of [`crate::config`], and atomic saving.
//!
//! # Format
//!
//! Plain JSON (RFC 8259), so any JSON tool can read and write it. JSON has
//! no comments; instead every object accepts a `"_comment"` key whose value
//! is a string or an array of strings. The loader ignores its content;
//! `save` writes back the comments of the top level, of targets, portal
//! groups, LUNs and ACL entries (comments elsewhere are accepted and
//! dropped on save). Every other unknown key is an error, and so is every
//! invalid value: the error names the JSON path of the offending field and
//! the reason, e.g. `targets[0].luns[2].sector_size: must be 512 or 4096,
//! got 1000`. See `examples/target.json` for a complete, commented example.
//!
//! # What the runtime structs cannot hold
//!
//! [`crate::config::TargetConfig`] is the runtime source of truth, ACL
//! included: per-initiator LUN masking and CHAP accounts (`acl[].luns`,
//! `acl[].chap`) map onto [`crate::config::InitiatorConfig`] and are
//! enforced by the login code and the device server. What the runtime
//! structs have no field for lives in [`Extensions`]: comments (written
//! back by `save`) and the LUN settings [`crate::admin`] applies when it
//! builds the logical units (vendor, product, WWN seed).
//!
//! # Saving
//!
//! [`save_atomic`]: serialize, write a temporary file in the same directory
//! (mode 0600: the file holds CHAP secrets), fsync it, rename it over the
//! target path, fsync the directory. A crash leaves either the old or the
//! new file, never a torn one.
//!
//! # Files
//!
//! - `error.rs`: [`FileError`], every error naming the JSON path.
//! - `schema.rs`: the JSON schema ([`ConfigFile`] and its entries), and
//!   [`Loaded`] / [`Extensions`], what a file maps onto.
//! - `load.rs`: [`load`], [`parse_str`], [`parse_schema`], [`to_runtime`]:
//!   reading, parsing and validating a whole file.
//! - `validate.rs`: field checks (names, company id, CHAP, session
//!   parameters, admission limits).
//! - `lun.rs`: [`lun_to_runtime`], one LUN entry and its backend.
//! - `save.rs`: [`to_file`], [`to_json`], [`save_atomic`]: back to the file.
//! - `tests.rs`: unit tests.

mod error;
mod load;
mod lun;
mod save;
mod schema;
mod validate;

#[cfg(test)]
mod tests;

pub use error::FileError;
pub use load::{load, parse_schema, parse_str, to_runtime};
pub use lun::lun_to_runtime;
pub use save::{
    chap_entry, lun_entry, save_atomic, session_entry, size_entry, target_entry, to_file, to_json,
};
pub use schema::{
    AccountEntry, AclEntry, CephEntry, ChapEntry, Comment, ConfigFile, DiscoveryEntry, Extensions,
    LimitsEntry, Loaded, LunEntry, LunExt, PortalGroupEntry, SessionEntry, SizeEntry, TargetEntry,
    TargetExt,
};
pub(crate) use validate::{check_ascii_field, check_name};
pub use validate::{check_initiator_name, format_company_id, parse_company_id};

/// Largest configuration file accepted (a sanity bound, not a format limit).
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// Highest LUN number (SAM-5 flat space addressing, 14 bits).
pub const MAX_LUN: u64 = 16383;
