//! The control channel, initiator side (docs/control-channel.md): tags in
//! the reserved bits of READ/WRITE CDBs and the vendor control command.
//!
//! - [`IoTags`]: which tag (1..=7) a session's or a device view's block I/O
//!   carries. The bits themselves are written by
//!   [`proto::scsi::control::set_tag`] only, so both ends share one
//!   definition (READ/WRITE(10): bits 7-5 of byte 6, above the SBC-3
//!   GROUP NUMBER; (12): byte 10; (16): the CONTROL byte, whose bits 7-6
//!   SAM-5 leaves vendor specific; that module quotes SBC-4 for each).
//!   Our block I/O is READ(16)/WRITE(16), so its tag is in byte 15.
//! - [`list`], [`get`], [`set`]: the vendor command's service actions LIST,
//!   GET and SET of named switches on a LUN ([`proto::scsi::control::CtlCommand`]);
//!   [`capabilities`]: the vendor VPD page ([`proto::scsi::control::CTL_VPD_PAGE`]).
//! - [`advice`]: what to do about a refusal (no control right, channel off,
//!   a target without the channel), for the CLI's messages.
//!
//! A tag is only accepted by a target whose LUN has the channel on; a LUN
//! with it off refuses the reserved bits with ILLEGAL REQUEST / INVALID
//! FIELD IN CDB (SPC-5 §4.5.2), which reaches the caller as
//! [`Error::Scsi`].

use bytes::Bytes;
use proto::scsi::cdb::Cdb;
use proto::scsi::control::{self, ControlVpd, CtlCommand, Switch};
use proto::scsi::{Sense, SenseKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ProtocolError, Result};
use crate::session::{DataDirection, Session};

/// Allocation length of LIST and GET: the largest the CDB's 16-bit field
/// holds; the switch list of one LUN is far smaller.
const SWITCHES_ALLOC: u32 = u16::MAX as u32;

/// The tags block reads and writes carry (`None`: untagged). Set per
/// session ([`crate::SessionConfig::io_tags`], `iscsi login --tag-writes 6
/// --tag-reads N`) and per device view ([`crate::ScsiDevice::with_tags`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoTags {
    /// Tag of every READ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<u8>,
    /// Tag of every WRITE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<u8>,
}

impl IoTags {
    /// Untagged reads and writes.
    pub const NONE: IoTags = IoTags {
        reads: None,
        writes: None,
    };

    /// Reads tagged `reads`, writes tagged `writes`; 0 means untagged, and
    /// anything above [`control::MAX_TAG`] is a usage error.
    pub fn new(reads: Option<u8>, writes: Option<u8>) -> Result<IoTags> {
        Ok(IoTags {
            reads: check_tag(reads)?,
            writes: check_tag(writes)?,
        })
    }

    /// Reads and writes both tagged `tag` (0: untagged).
    pub fn all(tag: u8) -> Result<IoTags> {
        IoTags::new(Some(tag), Some(tag))
    }

    pub fn is_none(&self) -> bool {
        *self == IoTags::NONE
    }
}

impl std::fmt::Display for IoTags {
    /// `writes tag 6, reads untagged`, or `untagged`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |x: Option<u8>| x.map_or("untagged".to_string(), |t| format!("tag {t}"));
        if self.is_none() {
            f.write_str("untagged")
        } else {
            write!(f, "writes {}, reads {}", t(self.writes), t(self.reads))
        }
    }
}

/// `Some(0)` is untagged; above MAX_TAG is refused.
pub fn check_tag(tag: Option<u8>) -> Result<Option<u8>> {
    match tag {
        None | Some(0) => Ok(None),
        Some(t) if t <= control::MAX_TAG => Ok(Some(t)),
        Some(t) => Err(Error::Usage(format!(
            "tag {t} does not fit the 3 reserved bits: use 1..={} (0 or none: untagged)",
            control::MAX_TAG
        ))),
    }
}

/// Parse a tag given by a user: `1`..`7`, or `0`/`none`/`off` for untagged.
pub fn parse_tag(s: &str) -> Result<Option<u8>> {
    match s.trim().to_ascii_lowercase().as_str() {
        "none" | "off" | "" => Ok(None),
        t => check_tag(Some(t.parse().map_err(|_| {
            Error::Usage(format!(
                "tag {s:?} is not a number: use 1..={} (0 or none: untagged)",
                control::MAX_TAG
            ))
        })?)),
    }
}

/// Put `tag` (`None`: untagged, left as built) in the reserved bits of a
/// READ/WRITE CDB, with [`control::tag_cdb`].
pub(crate) fn tag(cdb: &mut Cdb, tag: Option<u8>) -> Result<()> {
    match tag {
        None => Ok(()),
        Some(t) => {
            control::tag_cdb(cdb, t).map_err(|e| Error::Usage(format!("cannot tag this CDB: {e}")))
        }
    }
}

/// Send one control command to `lun`, with its Data-Out when the layout
/// puts parameters there.
async fn exec(s: &Session, lun: u64, c: &CtlCommand) -> Result<Bytes> {
    let cdb = c
        .encode()
        .map_err(|e| Error::Usage(format!("control command: {e}")))?;
    let dir = match (c, c.data_out()) {
        (_, Some(d)) => DataDirection::Write(d),
        (CtlCommand::List { alloc_len } | CtlCommand::Get { alloc_len, .. }, None) => {
            DataDirection::Read(*alloc_len)
        }
        (CtlCommand::Set { .. }, None) => DataDirection::None,
    };
    Ok(s.execute(lun, &cdb, dir).await?.data)
}

fn control_error(what: &'static str, source: proto::scsi::ControlError) -> Error {
    ProtocolError::Control { what, source }.into()
}

fn decode(data: &[u8]) -> Result<Vec<Switch>> {
    control::decode_switches(data).map_err(|source| control_error("switch list", source))
}

/// LIST: every switch of the LUN, with value, writability and help.
pub async fn list(s: &Session, lun: u64) -> Result<Vec<Switch>> {
    let d = exec(
        s,
        lun,
        &CtlCommand::List {
            alloc_len: SWITCHES_ALLOC,
        },
    )
    .await?;
    decode(&d)
}

/// GET one switch.
pub async fn get(s: &Session, lun: u64, name: &str) -> Result<Switch> {
    let c = CtlCommand::Get {
        name: name.to_string(),
        alloc_len: SWITCHES_ALLOC,
    };
    let d = exec(s, lun, &c).await?;
    decode(&d)?
        .into_iter()
        .find(|sw| sw.name == name)
        .ok_or_else(|| ProtocolError::MissingSwitch(name.to_string()).into())
}

/// SET a switch (needs the control right on the target), then GET it back
/// so the caller sees the value now in force.
pub async fn set(s: &Session, lun: u64, name: &str, value: &str) -> Result<Switch> {
    let c = CtlCommand::Set {
        name: name.to_string(),
        value: value.to_string(),
    };
    exec(s, lun, &c).await?;
    get(s, lun, name).await
}

/// The vendor VPD page: is the channel on, may we SET, which tag bits,
/// which switches. `None` when the LUN's Supported VPD Pages (00h, SPC-5
/// §7.7.13) do not list it: the channel is off there (our target answers
/// the page only when it is on), or the target has no such channel.
pub async fn capabilities(s: &Session, lun: u64) -> Result<Option<ControlVpd>> {
    let pages = crate::device::vpd(s, lun, 0x00).await?;
    let listed = proto::scsi::inquiry::parse_vpd(&pages)
        .is_some_and(|(_, list)| list.contains(&control::CTL_VPD_PAGE));
    if !listed {
        return Ok(None);
    }
    let page = crate::device::vpd(s, lun, control::CTL_VPD_PAGE).await?;
    ControlVpd::decode(&page)
        .map(Some)
        .map_err(|source| control_error("control VPD page", source))
}

/// What was refused, for [`advice`].
#[derive(Debug, Clone, Copy)]
pub enum Refused<'a> {
    /// The vendor command (LIST, GET, SET; `switch` for GET and SET).
    Command { switch: Option<&'a str> },
    /// A READ or WRITE with a tag.
    TaggedIo,
}

/// The sense data of a refused command, if it was one.
pub fn sense_of(e: &Error) -> Option<&Sense> {
    match e {
        Error::Scsi(se) => se.sense.as_ref(),
        _ => None,
    }
}

/// Why the target refused a control command or a tagged I/O, and what to
/// do, when the sense data is one of the channel's refusals (see
/// docs/control-channel.md). `initiator` and `target` are the names to put
/// in the commands it suggests.
pub fn advice(sense: &Sense, what: Refused<'_>, initiator: &str, target: &str) -> Option<String> {
    if sense.key != SenseKey::ILLEGAL_REQUEST {
        return None;
    }
    let a = sense.asc;
    let turn_on = format!(
        "turn it on with `iscsi target set-lun --target {target} --lun N control=on` or start \
         the target with `iscsi target serve --control`"
    );
    Some(match (a.asc(), a.ascq(), what) {
        // SPC-5 table 51: 20h/01h..0Bh are ACCESS DENIED.
        (0x20, 0x01..=0x0B, _) => format!(
            "this initiator ({initiator}) lacks the control right on the LUN, so nothing was \
             changed; grant it on the target with `iscsi target allow {initiator} --target \
             {target} --control` (or start the target with `iscsi target serve --control`)"
        ),
        (asc, t, _) if asc == control::ASC_TAG_REJECTED => format!(
            "the target's policy for tag {t} on this LUN is reject; change it with `iscsi ctl \
             set tag{t}.policy=log --target {target} ...` (needs the control right)"
        ),
        // A LUN with the channel off does not support the vendor command.
        (0x20, 0x00, Refused::Command { .. }) => format!(
            "the LUN does not take the control command: its control channel is off ({turn_on}), \
             or the target is not an iscsi-rs target"
        ),
        (0x24, 0x00, Refused::TaggedIo) => {
            format!("the LUN refuses tagged I/O: its control channel is off; {turn_on}")
        }
        (0x24, 0x00, Refused::Command { switch: Some(n) }) => {
            format!("the LUN has no switch named {n:?}; `iscsi ctl list` shows them")
        }
        (0x26, _, Refused::Command { switch: Some(n) })
        | (0x1A, 0x00, Refused::Command { switch: Some(n) }) => {
            format!(
                "switch {n} does not take that value; `iscsi ctl list` shows the values it takes"
            )
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_and_validate() {
        assert_eq!(parse_tag("6").unwrap(), Some(6));
        assert_eq!(parse_tag("0").unwrap(), None);
        assert_eq!(parse_tag("none").unwrap(), None);
        let e = parse_tag("8").unwrap_err().to_string();
        assert!(e.contains("1..=7"), "{e}");
        assert!(parse_tag("x").is_err());
        assert_eq!(IoTags::all(0).unwrap(), IoTags::NONE);
        assert_eq!(
            IoTags::new(None, Some(6)).unwrap().to_string(),
            "writes tag 6, reads untagged"
        );
        assert_eq!(IoTags::NONE.to_string(), "untagged");
    }

    /// Every command this module sends encodes (the lengths fit the CDB).
    #[test]
    fn commands_encode() {
        for c in [
            CtlCommand::List {
                alloc_len: SWITCHES_ALLOC,
            },
            CtlCommand::Get {
                name: "tag7.policy".into(),
                alloc_len: SWITCHES_ALLOC,
            },
        ] {
            c.encode().unwrap();
        }
    }

    #[test]
    fn advice_names_the_fix() {
        use proto::scsi::Asc;
        let ill = |asc: Asc| Sense::new(SenseKey::ILLEGAL_REQUEST, asc);
        let set = Refused::Command {
            switch: Some("io_mode"),
        };
        let a = advice(
            &ill(control::ASC_ACCESS_DENIED_NO_RIGHTS),
            set,
            "iqn.a:i",
            "iqn.b:t",
        );
        let a = a.unwrap();
        assert!(a.contains("lacks the control right"), "{a}");
        assert!(
            a.contains("iscsi target allow iqn.a:i --target iqn.b:t --control"),
            "{a}"
        );
        let a = advice(
            &ill(Asc::new(control::ASC_TAG_REJECTED, 6)),
            Refused::TaggedIo,
            "i",
            "t",
        );
        assert!(a.unwrap().contains("tag6.policy"));
        let off = advice(&ill(Asc::INVALID_COMMAND_OPERATION_CODE), set, "i", "t").unwrap();
        assert!(off.contains("control=on"), "{off}");
        let off = advice(&ill(Asc::INVALID_FIELD_IN_CDB), Refused::TaggedIo, "i", "t").unwrap();
        assert!(off.contains("control=on"), "{off}");
        let name = advice(&ill(Asc::INVALID_FIELD_IN_CDB), set, "i", "t").unwrap();
        assert!(name.contains("no switch named \"io_mode\""), "{name}");
        let value = advice(&ill(Asc::INVALID_FIELD_IN_PARAMETER_LIST), set, "i", "t").unwrap();
        assert!(value.contains("does not take that value"), "{value}");
        assert!(advice(&ill(Asc::LBA_OUT_OF_RANGE), set, "i", "t").is_none());
        let other = Sense::new(SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED);
        assert!(advice(&other, Refused::TaggedIo, "i", "t").is_none());
        assert!(sense_of(&Error::Closed).is_none());
    }

    /// The tagged CDB is the proto encoding; an untagged CDB is the very
    /// same bytes as the standard builder's.
    #[test]
    fn tags_use_proto_and_leave_untagged_alone() {
        let plain = proto::scsi::cdb::write10(0x1234, 8, false);
        let mut c = plain;
        tag(&mut c, Some(6)).unwrap();
        assert_eq!(c.as_bytes()[6], 0xC0);
        assert_eq!(control::tag_of(c.as_bytes()), Some(6));
        let mut u = plain;
        tag(&mut u, None).unwrap();
        assert_eq!(u.as_bytes(), plain.as_bytes());
        for t in 1..=control::MAX_TAG {
            let mut c = proto::scsi::cdb::read16(7, 1, false);
            tag(&mut c, Some(t)).unwrap();
            assert_eq!(control::tag_of(c.as_bytes()), Some(t));
        }
        let mut tur = proto::scsi::cdb::test_unit_ready();
        assert!(tag(&mut tur, Some(1)).is_err());
    }
}
