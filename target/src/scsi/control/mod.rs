//! The control channel on the target (issue #12; the encodings are
//! `proto::scsi::control`, the user guide docs/control-channel.md).
//!
//! Per logical unit, off by default. Off, the tag bits stay reserved
//! (`Command::parse` refuses them with INVALID FIELD IN CDB)
//! and the vendor operation code C7h is INVALID COMMAND OPERATION CODE,
//! exactly as on a LUN without the feature. On:
//!
//! - [`tags`]: READ/WRITE(10/12/16) CDBs carrying a tag are counted per tag
//!   (commands, bytes), remembered in a bounded ring of [`RING_LEN`] recent
//!   tagged commands, and handled by the tag's [`Policy`]: `log`, `fua`
//!   (the write is durable before status, as with FUA = 1),
//!   `reject` (CHECK CONDITION, ILLEGAL REQUEST, ASC 80h ASCQ = tag), or
//!   `limit:N` (at most N commands per second for that tag on that LUN:
//!   commands over the rate wait before they run).
//! - [`switches`]: the vendor command C7h LIST/GET/SET of named switches
//!   (`io_mode`, `trace`, `tagN.policy`, and the read-only
//!   `can_set`), and the vendor VPD page C7h. SET needs the control
//!   right ([`crate::scsi::DeviceServer::has_control_right`]); without it:
//!   ILLEGAL REQUEST, 20h/02h ACCESS DENIED - NO ACCESS RIGHTS.
//! - `trace`: when on, every command to the LU is logged at info level
//!   (target `iscsi_target::trace`).

pub(crate) mod switches;
pub(crate) mod tags;

pub use tags::{Policy, TagEvent, TagStats};

use crate::sync::lock;
use proto::scsi::control::strip_tag;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// How many recent tagged commands a LU remembers.
pub const RING_LEN: usize = 64;

/// The channel's state of one logical unit.
#[derive(Debug)]
pub struct ControlState {
    enabled: AtomicBool,
    trace: AtomicBool,
    tags: Mutex<tags::Tags>,
}

/// What `target show` reports of one LU's channel.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct ControlSnapshot {
    pub enabled: bool,
    pub trace: bool,
    /// By tag number ("1".."7"): counters and policy.
    pub tags: BTreeMap<String, TagStats>,
    /// Recent tagged commands, oldest first (at most [`RING_LEN`]).
    pub recent: Vec<TagEvent>,
}

impl ControlState {
    pub fn new(enabled: bool) -> Self {
        ControlState {
            enabled: AtomicBool::new(enabled),
            trace: AtomicBool::new(false),
            tags: Mutex::new(tags::Tags::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn trace(&self) -> bool {
        self.trace.load(Ordering::Relaxed)
    }

    pub fn set_trace(&self, on: bool) {
        self.trace.store(on, Ordering::Relaxed);
    }

    pub(crate) fn tags(&self) -> MutexGuard<'_, tags::Tags> {
        lock(&self.tags)
    }

    pub fn policy(&self, tag: u8) -> Policy {
        self.tags().policy(tag)
    }

    pub fn set_policy(&self, tag: u8, p: Policy) {
        self.tags().set_policy(tag, p);
    }

    /// The tag and a tag-free copy of the CDB, when the channel is on and
    /// the CDB is a READ/WRITE(10/12/16) carrying one.
    pub fn untag(&self, cdb: &[u8]) -> Option<(u8, [u8; 16])> {
        if !self.enabled() {
            return None;
        }
        strip_tag(cdb)
    }

    pub fn snapshot(&self) -> ControlSnapshot {
        let t = self.tags();
        ControlSnapshot {
            enabled: self.enabled(),
            trace: self.trace(),
            tags: t.stats(),
            recent: t.recent(),
        }
    }
}
