//! Tagged I/O: per-tag counters, the ring of recent tagged commands and
//! the tag policies (see the parent module).

use super::RING_LEN;
use crate::scsi::{LogicalUnit, Nexus};
use proto::scsi::control::{ASC_TAG_REJECTED, MAX_TAG};
use proto::scsi::{Asc, Command, Sense, SenseKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Highest `limit:N` rate (commands per second).
pub const MAX_LIMIT: u32 = 1_000_000;

/// What the target does with a command carrying a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Count it, nothing else.
    #[default]
    Log,
    /// A tagged write is durable before its status, as if FUA were set,
    /// whatever the write cache mode (reads: unchanged).
    Fua,
    /// Refuse it: CHECK CONDITION, ILLEGAL REQUEST, ASC 80h, ASCQ = tag.
    Reject,
    /// At most N commands per second with this tag on this LU; commands
    /// over the rate wait (evenly spaced, no burst beyond one command).
    Limit(u32),
}

impl Policy {
    /// `log`, `fua`, `reject` or `limit:N` (1..=1000000 commands/s).
    pub fn parse(s: &str) -> Result<Policy, String> {
        match s {
            "log" => Ok(Policy::Log),
            "fua" => Ok(Policy::Fua),
            "reject" => Ok(Policy::Reject),
            _ => match s.strip_prefix("limit:").map(str::parse::<u32>) {
                Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => Ok(Policy::Limit(n)),
                _ => Err(format!(
                    "policy {s:?} is not one of log, fua, reject, limit:N (N = 1..={MAX_LIMIT} commands per second)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Log => f.write_str("log"),
            Policy::Fua => f.write_str("fua"),
            Policy::Reject => f.write_str("reject"),
            Policy::Limit(n) => write!(f, "limit:{n}"),
        }
    }
}

/// Counters of one tag on one LU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TagStats {
    pub policy: String,
    /// Tagged commands received (rejected ones included).
    pub commands: u64,
    /// Bytes those commands asked to move.
    pub bytes: u64,
    /// Commands refused by the `reject` policy.
    pub rejected: u64,
    /// Writes made durable by the `fua` policy.
    pub forced_fua: u64,
    /// Total time commands waited under `limit:N`, in milliseconds.
    pub delayed_ms: u64,
}

/// One recent tagged command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub initiator: String,
    pub lun: u16,
    pub write: bool,
    pub lba: u64,
    pub blocks: u32,
    pub tag: u8,
    /// `log`, `fua`, `reject` or `limit:N`: what the policy did.
    pub policy: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    commands: u64,
    bytes: u64,
    rejected: u64,
    forced_fua: u64,
    delayed: Duration,
}

/// Per-LU tag state (behind the [`super::ControlState`] mutex; never held
/// across I/O or a wait).
#[derive(Debug, Default)]
pub(crate) struct Tags {
    policies: [Policy; MAX_TAG as usize + 1],
    counters: [Counter; MAX_TAG as usize + 1],
    /// `limit:N`: when the next command of each tag may start.
    next_start: [Option<Instant>; MAX_TAG as usize + 1],
    ring: VecDeque<TagEvent>,
}

impl Tags {
    pub(crate) fn policy(&self, tag: u8) -> Policy {
        self.policies[usize::from(tag.min(MAX_TAG))]
    }

    pub(crate) fn set_policy(&mut self, tag: u8, p: Policy) {
        let t = usize::from(tag.min(MAX_TAG));
        self.policies[t] = p;
        self.next_start[t] = None;
    }

    pub(crate) fn stats(&self) -> BTreeMap<String, TagStats> {
        (1..=MAX_TAG)
            .map(|t| {
                let c = self.counters[usize::from(t)];
                let s = TagStats {
                    policy: self.policy(t).to_string(),
                    commands: c.commands,
                    bytes: c.bytes,
                    rejected: c.rejected,
                    forced_fua: c.forced_fua,
                    delayed_ms: c.delayed.as_millis() as u64,
                };
                (t.to_string(), s)
            })
            .collect()
    }

    pub(crate) fn recent(&self) -> Vec<TagEvent> {
        self.ring.iter().cloned().collect()
    }

    /// Counts one command, remembers it, and says what its policy wants
    /// (and how long a `limit:N` command waits).
    fn admit(&mut self, ev: TagEvent, bytes: u64, now: Instant) -> (Policy, Duration) {
        let t = usize::from(ev.tag.min(MAX_TAG));
        let policy = self.policies[t];
        let c = &mut self.counters[t];
        c.commands += 1;
        c.bytes += bytes;
        let mut wait = Duration::ZERO;
        match policy {
            Policy::Reject => c.rejected += 1,
            Policy::Fua if ev.write => c.forced_fua += 1,
            Policy::Limit(n) => {
                let start = self.next_start[t].map_or(now, |s| s.max(now));
                self.next_start[t] = Some(start + Duration::from_secs(1) / n);
                wait = start - now;
                c.delayed += wait;
            }
            _ => {}
        }
        if self.ring.len() == RING_LEN {
            self.ring.pop_front();
        }
        self.ring.push_back(ev);
        (policy, wait)
    }
}

/// ILLEGAL REQUEST, ASC 80h (vendor specific), ASCQ = tag, with a field
/// pointer at the tag bits of the CDB of operation code `opcode`.
pub fn rejected_sense(tag: u8, opcode: u8) -> Sense {
    let byte = proto::scsi::control::tag_field(opcode).map_or(0, |f| u16::from(f.byte));
    Sense::new(SenseKey::ILLEGAL_REQUEST, Asc::new(ASC_TAG_REJECTED, tag)).with_field_pointer(
        true,
        byte,
        Some(7),
    )
}

/// Applies tag `tag`'s policy to a parsed READ/WRITE: counts it, records it
/// in the ring, and returns the command to run (with FUA forced by `fua`)
/// after any `limit:N` wait, or the sense data of a `reject`.
pub(crate) async fn apply(
    lu: &LogicalUnit,
    nexus: &Nexus,
    tag: u8,
    opcode: u8,
    cmd: Command,
) -> Result<Command, Sense> {
    let (write, rw) = match &cmd {
        Command::Read { rw, .. } => (false, *rw),
        Command::Write { rw, .. } => (true, *rw),
        // Only READ/WRITE carry tags (proto::scsi::control::tag_field).
        _ => return Ok(cmd),
    };
    let ev = TagEvent {
        time_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        initiator: nexus.initiator_name().to_string(),
        lun: lu.cfg.lun,
        write,
        lba: rw.lba,
        blocks: rw.blocks,
        tag,
        policy: String::new(),
    };
    let bytes = u64::from(rw.blocks) * u64::from(lu.block_size());
    let (policy, wait) = {
        let mut t = lu.control.tags();
        let mut ev = ev;
        ev.policy = t.policy(tag).to_string();
        t.admit(ev, bytes, Instant::now())
    };
    tracing::debug!(lun = lu.cfg.lun, tag, write, lba = rw.lba, blocks = rw.blocks, %policy, "tagged command");
    match policy {
        Policy::Reject => Err(rejected_sense(tag, opcode)),
        Policy::Fua => Ok(match cmd {
            Command::Write { size, mut rw } => {
                rw.fua = true;
                Command::Write { size, rw }
            }
            other => other,
        }),
        Policy::Limit(_) => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(cmd)
        }
        Policy::Log => Ok(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(tag: u8, write: bool) -> TagEvent {
        TagEvent {
            time_ms: 0,
            initiator: "iqn.x".into(),
            lun: 0,
            write,
            lba: 0,
            blocks: 1,
            tag,
            policy: String::new(),
        }
    }

    #[test]
    fn policies_parse_and_print() {
        for s in ["log", "fua", "reject", "limit:1", "limit:1000000"] {
            assert_eq!(Policy::parse(s).unwrap().to_string(), s);
        }
        for s in [
            "",
            "LOG",
            "limit:",
            "limit:0",
            "limit:1000001",
            "limit:x",
            "snapshot",
        ] {
            assert!(Policy::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn counters_ring_and_limit_spacing() {
        let mut t = Tags::default();
        let now = Instant::now();
        for i in 0..(RING_LEN + 10) {
            let (p, w) = t.admit(ev(6, i % 2 == 0), 512, now);
            assert_eq!((p, w), (Policy::Log, Duration::ZERO));
        }
        let s = t.stats();
        assert_eq!(
            (s["6"].commands, s["6"].bytes),
            ((RING_LEN + 10) as u64, 512 * (RING_LEN + 10) as u64)
        );
        assert_eq!(s["1"].commands, 0);
        assert_eq!(t.recent().len(), RING_LEN);
        t.set_policy(3, Policy::Limit(10));
        let waits: Vec<Duration> = (0..4).map(|_| t.admit(ev(3, true), 0, now).1).collect();
        assert_eq!(
            waits,
            [0, 100, 200, 300].map(Duration::from_millis).to_vec()
        );
        assert_eq!(t.stats()["3"].delayed_ms, 600);
        t.set_policy(2, Policy::Reject);
        t.admit(ev(2, false), 0, now);
        t.set_policy(5, Policy::Fua);
        t.admit(ev(5, true), 0, now);
        t.admit(ev(5, false), 0, now);
        let s = t.stats();
        assert_eq!(
            (s["2"].rejected, s["5"].forced_fua, s["5"].commands),
            (1, 1, 2)
        );
    }

    #[test]
    fn rejected_sense_points_at_the_tag_bits() {
        let s = rejected_sense(4, 0x2A);
        assert_eq!(
            (s.key, s.asc),
            (SenseKey::ILLEGAL_REQUEST, Asc::new(0x80, 4))
        );
        assert_eq!(
            s.sense_key_specific,
            Some(proto::scsi::sense::SenseKeySpecific::FieldPointer {
                cdb: true,
                bit: Some(7),
                field: 6
            })
        );
        let s16 = rejected_sense(1, 0x88);
        assert!(matches!(
            s16.sense_key_specific,
            Some(proto::scsi::sense::SenseKeySpecific::FieldPointer { field: 15, .. })
        ));
    }
}
