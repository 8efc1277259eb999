//! The control channel (issue #12): tagged I/O in reserved CDB bits and a
//! vendor command that lists, reads and sets named switches on a LUN, plus
//! a vendor VPD page that advertises both. Both ends use these definitions;
//! docs/control-channel.md is the user-facing description.
//!
//! # Tag bits (SBC-4 READ and WRITE commands)
//!
//! A tag is 3 bits, 1..=7 (0 = untagged), carried where SBC-4 leaves room:
//!
//! ```text
//! READ(10) 28h / WRITE(10) 2Ah                 READ(12) A8h / WRITE(12) AAh
//!      7    6    5    4    3    2    1    0         7    6    5    4 ... 0
//!   6 | TAG (7-5)    | GROUP NUMBER (4-0)   |   10 | TAG (7-5)    | GROUP (4-0) |
//!
//! READ(16) 88h / WRITE(16) 8Ah
//!      7    6    5    4    3    2    1    0
//!  15 | TAG (7-5)    | Reserved  |NACA| Obs| Obs|     (the CONTROL byte)
//! ```
//!
//! - (10): SBC-4 table "WRITE (10) command" shows byte 6 as `Reserved |
//!   GROUP NUMBER`; bits 7-6 are reserved and bit 5 is the top bit of the
//!   6-bit GROUP NUMBER of SBC-4 (SBC-3 had 5 bits). The recipe this feature
//!   copies (`cmnd[6] = 0xc0` for tag 6) fixes bits 7-5, so a LUN with the
//!   channel on reads GROUP NUMBER as the 5-bit SBC-3 field: groups 32..=63
//!   are not available there. Our target does not implement grouping
//!   functions (it accepts and ignores GROUP NUMBER), so nothing is lost.
//! - (12): SBC-4 "WRITE (12) command" byte 10 is `Restricted for MMC-5 |
//!   Reserved | GROUP NUMBER`; bit 7 belongs to MMC only (never set for a
//!   direct-access device), bit 6 is reserved, bit 5 is the same GROUP
//!   NUMBER top bit as in (10). Same field as (10), same trade-off.
//! - (16): byte 14 is NOT free: SBC-4 added the command duration limit
//!   bits, `DLD1 | DLD0 | GROUP NUMBER` ("See the READ (16) command for the
//!   definitions of the DLD2 bit, the DLD1 bit, and the DLD0 bit"), and byte
//!   1 bit 0 is DLD2. A Linux initiator with CDL enabled sets those bits, so
//!   a tag there would be misread. The tag goes in the CONTROL byte instead
//!   (the CONTROL byte of SAM-5 / SPC-5): bits 7-6 are VENDOR SPECIFIC, defined by
//!   the standard for exactly this kind of private use, and bit 5 is the top
//!   reserved bit next to them. NACA (bit 2) is left alone.
//!
//! A device server without the channel rejects all three with INVALID
//! FIELD IN CDB (the bits are outside the usage masks in [`super::cdb`]).
//!
//! # Vendor command (opcode [`CTL_OPCODE`] = C7h, 16-byte CDB)
//!
//! ```text
//!      7    6    5    4    3    2    1    0
//!   0 | OPERATION CODE (C7h)                  |
//!   1 | Reserved     | SERVICE ACTION         |  00h LIST, 01h GET, 02h SET
//!   2 | VERSION (01h)                         |
//!   3 | SWITCH NAME                           |  GET, SET: 1..=11 bytes of
//!  .. |                                       |  [a-z0-9_.], NUL padded;
//!  13 |                                       |  all zero for LIST
//!  14 | (MSB) ALLOCATION LENGTH (LIST, GET)   |
//!  15 |  or PARAMETER LIST LENGTH (SET) (LSB) |
//! ```
//!
//! The CDB has no room for both a 16-bit length and a CONTROL byte after an
//! 11-byte name, and the name matters more (`tag7.policy` is 11 bytes), so
//! the length takes bytes 14-15 and the command has no CONTROL byte (it is
//! vendor specific: SPC-5 leaves the layout of operation codes C0h-FFh to the vendor). SET's
//! value travels as Data-Out parameter data: PARAMETER LIST LENGTH bytes of
//! ASCII (1..=[`MAX_VALUE_LEN`]), no terminator. LIST and GET answer with the
//! switch list below, truncated to ALLOCATION LENGTH (SPC-5 allocation length rules).
//!
//! # Switch list (Data-In of LIST and GET)
//!
//! ```text
//!   0..=3  LIST LENGTH: bytes after byte 7 (the whole list, even if truncated)
//!   4      VERSION (01h)
//!   5..=7  Reserved
//!   8..    switch descriptors, each:
//!          0     FLAGS: bit 0 WRITABLE, other bits reserved
//!          1     NAME LENGTH (n, 1..=11)
//!          2     VALUE LENGTH (v)
//!          3     HELP LENGTH (h)
//!          4..   NAME (n bytes), VALUE (v bytes), HELP (h bytes), ASCII
//! ```
//!
//! # Vendor VPD page [`CTL_VPD_PAGE`] = C7h (INQUIRY EVPD=1)
//!
//! ```text
//!   0      PERIPHERAL QUALIFIER | DEVICE TYPE
//!   1      PAGE CODE (C7h)
//!   2..=3  PAGE LENGTH
//!   4      VERSION (01h)
//!   5      FLAGS: bit 0 ENABLED (channel on), bit 1 CONTROL RIGHT (the asking
//!          initiator may SET)
//!   6      VENDOR COMMAND OPERATION CODE (C7h)
//!   7      MAX TAG (07h)
//!   8..=13 TAG FIELDS: three (BYTE, LOW BIT) pairs for the 10-, 12- and
//!          16-byte CDBs: 06h 05h, 0Ah 05h, 0Fh 05h
//!   14     Reserved
//!   15     NUMBER OF SWITCHES (k)
//!   16..   k times: NAME LENGTH (1 byte), NAME
//! ```

use bytes::Bytes;

use super::cdb::{Cdb, Opcode};
use super::sense::Asc;

/// Largest tag value (3 bits).
pub const MAX_TAG: u8 = 7;
/// Operation code of the vendor control command (SPC-5: C0h-FFh are vendor
/// specific).
pub const CTL_OPCODE: u8 = 0xC7;
/// Vendor VPD page code (SPC-5: VPD page codes C0h-FFh are vendor specific).
pub const CTL_VPD_PAGE: u8 = 0xC7;
/// Layout version carried in the CDB, the switch list and the VPD page.
pub const CTL_VERSION: u8 = 1;
/// Longest switch name (the CDB's SWITCH NAME field).
pub const MAX_NAME_LEN: usize = 11;
/// Longest SET value (Data-Out parameter list).
pub const MAX_VALUE_LEN: usize = 255;
/// Longest help text in a switch descriptor.
pub const MAX_HELP_LEN: usize = 255;

/// Service actions of the vendor command (CDB byte 1, bits 4-0).
pub const SA_LIST: u8 = 0x00;
pub const SA_GET: u8 = 0x01;
pub const SA_SET: u8 = 0x02;

/// CDB USAGE DATA of the vendor command (REPORT SUPPORTED OPERATION CODES,
/// SPC-5 §6.35.3) on a LUN with the channel on.
pub const CTL_USAGE: [u8; 16] = [
    CTL_OPCODE, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF,
];

const NAME_AT: usize = 3;
const LEN_AT: usize = 14;
const LIST_HEADER: usize = 8;
const DESC_HEADER: usize = 4;

/// Sense for a SET from an initiator without the control right: ILLEGAL
/// REQUEST, 20h/02h ACCESS DENIED - NO ACCESS RIGHTS (SPC-5 table 51): the
/// initiator is known, the command is supported, it is the right that is
/// missing (02h, not 01h "pending-enrolled" or 03h "invalid mgmt id key").
pub const ASC_ACCESS_DENIED_NO_RIGHTS: Asc = Asc::new(0x20, 0x02);
/// Sense for a command refused by its tag's `reject` policy: ILLEGAL
/// REQUEST, ASC 80h (vendor specific range 80h-FFh, SPC-5 §4.4.3), ASCQ =
/// the tag. Distinct from INVALID FIELD IN CDB, which means "channel off".
pub const ASC_TAG_REJECTED: u8 = 0x80;

/// Errors of the control-channel encoders and decoders.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("tag {0} is out of range: use 1..=7, or 0 to clear the tag")]
    TagOutOfRange(u8),
    #[error("opcode {0:#04x} cannot carry a tag: only READ/WRITE(10), (12) and (16) can")]
    NotTaggable(u8),
    #[error("CDB is {len} bytes, opcode {opcode:#04x} needs {need}")]
    ShortCdb { opcode: u8, len: usize, need: usize },
    #[error("not the control command: opcode {0:#04x}, expected 0xc7")]
    WrongOpcode(u8),
    #[error("control command version {0} is not supported (this end speaks version 1)")]
    Version(u8),
    #[error("unknown control service action {0:#04x} (0 LIST, 1 GET, 2 SET)")]
    ServiceAction(u8),
    #[error("reserved bits set in CDB byte {0}")]
    Reserved(usize),
    #[error("switch name {0:?} is invalid: 1..=11 characters of a-z, 0-9, '_' and '.'")]
    BadName(String),
    #[error("switch value is invalid: 1..=255 printable ASCII characters, no '='")]
    BadValue,
    #[error("help text longer than 255 bytes")]
    HelpTooLong,
    #[error("allocation length {0} is too large: the CDB field holds at most 65535")]
    AllocTooLarge(u32),
    #[error("{what} is truncated: it needs {need} bytes, got {got}; retry with allocation length {need}")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{0} is malformed")]
    Malformed(&'static str),
}

/// Where the tag sits in one CDB size: byte offset and the low bit of the
/// 3-bit field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagField {
    pub cdb_len: u8,
    pub byte: u8,
    pub shift: u8,
}

impl TagField {
    /// The bits of the byte the tag occupies.
    pub const fn mask(self) -> u8 {
        MAX_TAG << self.shift
    }
}

/// The tag fields for the 10-, 12- and 16-byte CDBs, in that order.
pub const TAG_FIELDS: [TagField; 3] = [
    TagField {
        cdb_len: 10,
        byte: 6,
        shift: 5,
    },
    TagField {
        cdb_len: 12,
        byte: 10,
        shift: 5,
    },
    TagField {
        cdb_len: 16,
        byte: 15,
        shift: 5,
    },
];

/// The tag field of a taggable operation code (READ/WRITE 10, 12, 16).
pub fn tag_field(opcode: u8) -> Option<TagField> {
    match Opcode(opcode) {
        Opcode::READ_10 | Opcode::WRITE_10 => Some(TAG_FIELDS[0]),
        Opcode::READ_12 | Opcode::WRITE_12 => Some(TAG_FIELDS[1]),
        Opcode::READ_16 | Opcode::WRITE_16 => Some(TAG_FIELDS[2]),
        _ => None,
    }
}

/// Put `tag` (1..=7; 0 clears) into the reserved bits of a READ/WRITE(10/12/16) CDB.
/// READ(10)/WRITE(10): bits 7-5 of byte 6, so tag 6 gives byte 6 = 0xC0.
pub fn set_tag(cdb: &mut [u8], tag: u8) -> Result<(), ControlError> {
    if tag > MAX_TAG {
        return Err(ControlError::TagOutOfRange(tag));
    }
    let op = *cdb.first().ok_or(ControlError::ShortCdb {
        opcode: 0,
        len: 0,
        need: 1,
    })?;
    let f = tag_field(op).ok_or(ControlError::NotTaggable(op))?;
    let need = f.cdb_len as usize;
    if cdb.len() < need {
        return Err(ControlError::ShortCdb {
            opcode: op,
            len: cdb.len(),
            need,
        });
    }
    let b = &mut cdb[f.byte as usize];
    *b = (*b & !f.mask()) | (tag << f.shift);
    Ok(())
}

/// [`set_tag`] on a CDB built by [`super::cdb::Command::encode`].
pub fn tag_cdb(cdb: &mut Cdb, tag: u8) -> Result<(), ControlError> {
    let mut bytes = [0u8; 16];
    let n = cdb.as_bytes().len();
    bytes[..n].copy_from_slice(cdb.as_bytes());
    set_tag(&mut bytes[..n], tag)?;
    for (i, &b) in bytes[..n].iter().enumerate() {
        cdb.set_byte(i, b);
    }
    Ok(())
}

/// The tag a READ/WRITE(10/12/16) CDB carries (None when 0 or not such a command).
pub fn tag_of(cdb: &[u8]) -> Option<u8> {
    let f = tag_field(*cdb.first()?)?;
    let tag = (cdb.get(f.byte as usize)? & f.mask()) >> f.shift;
    (tag != 0).then_some(tag)
}

/// Splits a CDB into its tag and a copy with the tag bits cleared, which
/// the standard parser then checks as an ordinary CDB. Only for a LUN with
/// the channel on; `None` when the CDB is not taggable or carries no tag.
pub fn strip_tag(cdb: &[u8]) -> Option<(u8, [u8; 16])> {
    let tag = tag_of(cdb)?;
    let mut out = [0u8; 16];
    let n = cdb.len().min(16);
    out[..n].copy_from_slice(&cdb[..n]);
    set_tag(&mut out, 0).ok()?;
    Some((tag, out))
}

/// Widens a CDB USAGE DATA mask (REPORT SUPPORTED OPERATION CODES) with the
/// tag bits of that command, for a LUN with the channel on.
pub fn widen_usage(usage: &mut [u8]) {
    if let Some(f) = usage.first().and_then(|&op| tag_field(op)) {
        if let Some(b) = usage.get_mut(f.byte as usize) {
            *b |= f.mask();
        }
    }
}

/// The vendor control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlCommand {
    /// All switches of the LUN.
    List { alloc_len: u32 },
    /// One switch, answered as a one-descriptor switch list.
    Get { name: String, alloc_len: u32 },
    /// Set a switch. `value` travels as Data-Out parameter data
    /// ([`CtlCommand::data_out`]); [`CtlCommand::decode`] of a SET CDB
    /// alone returns an empty value and [`CtlCommand::param_len`] bytes are
    /// due: complete it with [`CtlCommand::with_data_out`].
    Set { name: String, value: String },
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn valid_value(v: &str) -> bool {
    (1..=MAX_VALUE_LEN).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic() && b != b'=')
}

impl CtlCommand {
    /// The 16-byte CDB.
    pub fn encode(&self) -> Result<[u8; 16], ControlError> {
        let mut c = [0u8; 16];
        c[0] = CTL_OPCODE;
        c[2] = CTL_VERSION;
        let (sa, name, len) = match self {
            CtlCommand::List { alloc_len } => (SA_LIST, None, *alloc_len),
            CtlCommand::Get { name, alloc_len } => (SA_GET, Some(name), *alloc_len),
            CtlCommand::Set { name, value } => {
                if !valid_value(value) {
                    return Err(ControlError::BadValue);
                }
                (SA_SET, Some(name), value.len() as u32)
            }
        };
        c[1] = sa;
        if let Some(name) = name {
            if !valid_name(name) {
                return Err(ControlError::BadName(name.clone()));
            }
            c[NAME_AT..NAME_AT + name.len()].copy_from_slice(name.as_bytes());
        }
        let len = u16::try_from(len).map_err(|_| ControlError::AllocTooLarge(len))?;
        c[LEN_AT..LEN_AT + 2].copy_from_slice(&len.to_be_bytes());
        Ok(c)
    }

    /// Parses the CDB. Never panics. A SET comes back with an empty value:
    /// the value is in Data-Out (see [`CtlCommand::with_data_out`]).
    pub fn decode(cdb: &[u8]) -> Result<CtlCommand, ControlError> {
        let op = *cdb.first().ok_or(ControlError::ShortCdb {
            opcode: 0,
            len: 0,
            need: 16,
        })?;
        if op != CTL_OPCODE {
            return Err(ControlError::WrongOpcode(op));
        }
        if cdb.len() < 16 {
            return Err(ControlError::ShortCdb {
                opcode: op,
                len: cdb.len(),
                need: 16,
            });
        }
        if cdb[1] & 0xE0 != 0 {
            return Err(ControlError::Reserved(1));
        }
        if cdb[2] != CTL_VERSION {
            return Err(ControlError::Version(cdb[2]));
        }
        let sa = cdb[1] & 0x1F;
        let raw = &cdb[NAME_AT..NAME_AT + MAX_NAME_LEN];
        let len = u16::from_be_bytes([cdb[LEN_AT], cdb[LEN_AT + 1]]) as u32;
        let name = || -> Result<String, ControlError> {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            let lossy = String::from_utf8_lossy(&raw[..end]).into_owned();
            if raw[end..].iter().any(|&b| b != 0) || !valid_name(&lossy) {
                return Err(ControlError::BadName(lossy));
            }
            Ok(lossy)
        };
        match sa {
            SA_LIST => {
                if raw.iter().any(|&b| b != 0) {
                    return Err(ControlError::Reserved(NAME_AT));
                }
                Ok(CtlCommand::List { alloc_len: len })
            }
            SA_GET => Ok(CtlCommand::Get {
                name: name()?,
                alloc_len: len,
            }),
            SA_SET => {
                if len == 0 || len as usize > MAX_VALUE_LEN {
                    return Err(ControlError::BadValue);
                }
                Ok(CtlCommand::Set {
                    name: name()?,
                    value: String::new(),
                })
            }
            other => Err(ControlError::ServiceAction(other)),
        }
    }

    /// Bytes of Data-Out a decoded command expects (SET's PARAMETER LIST
    /// LENGTH; 0 for LIST and GET).
    pub fn param_len(cdb: &[u8]) -> usize {
        match CtlCommand::decode(cdb) {
            Ok(CtlCommand::Set { .. }) => {
                u16::from_be_bytes([cdb[LEN_AT], cdb[LEN_AT + 1]]) as usize
            }
            _ => 0,
        }
    }

    /// Completes a decoded SET with its Data-Out parameter data (the value).
    /// Other commands are returned unchanged.
    pub fn with_data_out(self, data: &[u8]) -> Result<CtlCommand, ControlError> {
        match self {
            CtlCommand::Set { name, .. } => {
                let value = std::str::from_utf8(data).map_err(|_| ControlError::BadValue)?;
                if !valid_value(value) {
                    return Err(ControlError::BadValue);
                }
                Ok(CtlCommand::Set {
                    name,
                    value: value.to_string(),
                })
            }
            other => Ok(other),
        }
    }

    /// Data-Out parameter data the command carries: SET's value.
    pub fn data_out(&self) -> Option<Bytes> {
        match self {
            CtlCommand::Set { value, .. } => Some(Bytes::copy_from_slice(value.as_bytes())),
            _ => None,
        }
    }
}

/// One switch as LIST and GET report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub name: String,
    pub value: String,
    pub writable: bool,
    pub help: String,
}

/// The Data-In of LIST and GET (see the module docs). Names, values and help
/// texts longer than their length fields are cut (the target's own switches
/// never are).
pub fn encode_switches(s: &[Switch]) -> Vec<u8> {
    let mut body = Vec::new();
    for sw in s {
        let name = &sw.name.as_bytes()[..sw.name.len().min(MAX_NAME_LEN)];
        let value = &sw.value.as_bytes()[..sw.value.len().min(MAX_VALUE_LEN)];
        let help = &sw.help.as_bytes()[..sw.help.len().min(MAX_HELP_LEN)];
        body.push(sw.writable as u8);
        body.push(name.len() as u8);
        body.push(value.len() as u8);
        body.push(help.len() as u8);
        body.extend_from_slice(name);
        body.extend_from_slice(value);
        body.extend_from_slice(help);
    }
    let mut out = Vec::with_capacity(LIST_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&[CTL_VERSION, 0, 0, 0]);
    out.extend_from_slice(&body);
    out
}

fn ascii(b: &[u8], what: &'static str) -> Result<String, ControlError> {
    if b.iter().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        Ok(String::from_utf8_lossy(b).into_owned())
    } else {
        Err(ControlError::Malformed(what))
    }
}

/// Parses a LIST/GET Data-In. A list cut short by the allocation length is
/// an error that names the length to retry with.
pub fn decode_switches(data: &[u8]) -> Result<Vec<Switch>, ControlError> {
    if data.len() < LIST_HEADER {
        return Err(ControlError::Truncated {
            what: "switch list header",
            need: LIST_HEADER,
            got: data.len(),
        });
    }
    if data[4] != CTL_VERSION {
        return Err(ControlError::Version(data[4]));
    }
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let need = LIST_HEADER.saturating_add(len);
    if data.len() < need {
        return Err(ControlError::Truncated {
            what: "switch list",
            need,
            got: data.len(),
        });
    }
    let mut rest = &data[LIST_HEADER..need];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < DESC_HEADER {
            return Err(ControlError::Malformed("switch descriptor header"));
        }
        let (flags, n, v, h) = (
            rest[0],
            rest[1] as usize,
            rest[2] as usize,
            rest[3] as usize,
        );
        if flags & !1 != 0 {
            return Err(ControlError::Malformed("switch descriptor flags"));
        }
        let total = DESC_HEADER + n + v + h;
        if rest.len() < total || n == 0 || n > MAX_NAME_LEN {
            return Err(ControlError::Malformed("switch descriptor"));
        }
        let body = &rest[DESC_HEADER..total];
        out.push(Switch {
            name: ascii(&body[..n], "switch name")?,
            value: ascii(&body[n..n + v], "switch value")?,
            writable: flags & 1 != 0,
            help: ascii(&body[n + v..], "switch help")?,
        });
        rest = &rest[total..];
    }
    Ok(out)
}

/// The vendor VPD page (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlVpd {
    /// The channel is on for this LUN (tags decoded, switches answered).
    pub enabled: bool,
    /// The initiator that asked may SET switches.
    pub control_right: bool,
    /// The vendor command's operation code.
    pub opcode: u8,
    pub max_tag: u8,
    /// Where the tag sits in the 10-, 12- and 16-byte CDBs.
    pub tag_bits: [TagField; 3],
    /// Switch names, in LIST order.
    pub switches: Vec<String>,
}

impl ControlVpd {
    /// This stack's page for a LUN with these switches.
    pub fn new(enabled: bool, control_right: bool, switches: Vec<String>) -> Self {
        ControlVpd {
            enabled,
            control_right,
            opcode: CTL_OPCODE,
            max_tag: MAX_TAG,
            tag_bits: TAG_FIELDS,
            switches,
        }
    }

    /// The whole page; `peripheral` is byte 0 (qualifier and device type).
    pub fn encode(&self, peripheral: u8) -> Vec<u8> {
        let mut p = vec![peripheral, CTL_VPD_PAGE, 0, 0, CTL_VERSION];
        p.push(self.enabled as u8 | (self.control_right as u8) << 1);
        p.push(self.opcode);
        p.push(self.max_tag);
        for f in &self.tag_bits {
            p.extend_from_slice(&[f.byte, f.shift]);
        }
        p.push(0);
        let names: Vec<&str> = self
            .switches
            .iter()
            .map(|s| &s[..s.len().min(MAX_NAME_LEN)])
            .take(255)
            .collect();
        p.push(names.len() as u8);
        for n in names {
            p.push(n.len() as u8);
            p.extend_from_slice(n.as_bytes());
        }
        let len = (p.len() - 4).min(u16::MAX as usize) as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    /// Parses the page (as returned by INQUIRY EVPD=1, page C7h).
    pub fn decode(page: &[u8]) -> Result<ControlVpd, ControlError> {
        if page.len() < 16 {
            return Err(ControlError::Truncated {
                what: "control VPD page",
                need: 16,
                got: page.len(),
            });
        }
        if page[1] != CTL_VPD_PAGE {
            return Err(ControlError::Malformed("control VPD page code"));
        }
        if page[4] != CTL_VERSION {
            return Err(ControlError::Version(page[4]));
        }
        let need = 4 + u16::from_be_bytes([page[2], page[3]]) as usize;
        if need < 16 {
            return Err(ControlError::Malformed("control VPD page length"));
        }
        if page.len() < need {
            return Err(ControlError::Truncated {
                what: "control VPD page",
                need,
                got: page.len(),
            });
        }
        let mut tag_bits = TAG_FIELDS;
        for (i, f) in tag_bits.iter_mut().enumerate() {
            f.byte = page[8 + 2 * i];
            f.shift = page[9 + 2 * i];
            if f.shift > 5 || f.byte >= f.cdb_len {
                return Err(ControlError::Malformed("control VPD tag field"));
            }
        }
        let count = page[15] as usize;
        let mut rest = &page[16..need];
        let mut switches = Vec::with_capacity(count);
        for _ in 0..count {
            let n = *rest
                .first()
                .ok_or(ControlError::Malformed("control VPD switch names"))?
                as usize;
            let name = rest
                .get(1..1 + n)
                .ok_or(ControlError::Malformed("control VPD switch names"))?;
            switches.push(ascii(name, "control VPD switch name")?);
            rest = &rest[1 + n..];
        }
        Ok(ControlVpd {
            enabled: page[5] & 1 != 0,
            control_right: page[5] & 2 != 0,
            opcode: page[6],
            max_tag: page[7],
            tag_bits,
            switches,
        })
    }
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
