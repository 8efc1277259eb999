//! iSCSI TransportIDs (SPC-4 §7.6.4.6, SPC-5 §7.6.4.6): how persistent
//! reservations name an initiator port in READ FULL STATUS and in the
//! parameter list of REGISTER AND MOVE.
//!
//! ```text
//! byte 0     FORMAT CODE (bits 7-6) | reserved | PROTOCOL IDENTIFIER (5h, bits 3-0)
//! byte 1     reserved
//! byte 2-3   ADDITIONAL LENGTH (n - 3): at least 20, a multiple of 4
//! byte 4-n   format 00b: ISCSI NAME, null-terminated, null-padded
//!            format 01b: ISCSI NAME ",i,0x" ISCSI INITIATOR SESSION ID
//!                        (12 hex digits), null-terminated, null-padded
//! ```
//!
//! Format 00b names an initiator device, not a port; an I_T nexus needs the
//! port (name and ISID), so REGISTER AND MOVE takes format 01b only.

use proto::name::IscsiName;

/// PROTOCOL IDENTIFIER of iSCSI (SPC-4 table 362).
pub const PROTOCOL_ISCSI: u8 = 0x5;
/// FORMAT CODE 01b: initiator port (name + ISID).
const FORMAT_PORT: u8 = 0x40;
/// Smallest ADDITIONAL LENGTH (SPC-4: "at least 20").
const MIN_ADDITIONAL_LENGTH: usize = 20;
/// The separator between the name and the ISID in format 01b.
const SEPARATOR: &str = ",i,0x";

/// A parsed iSCSI TransportID of format 01b.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IscsiPortId {
    /// The iSCSI name as written (validated, not case-folded).
    pub name: String,
    pub isid: [u8; 6],
}

impl IscsiPortId {
    /// The initiator port name "<name>,i,0x<isid>" with the ISID in lower
    /// case hex, as the target builds it at login (RFC 7143 §4.4.2).
    pub fn initiator_port(&self) -> String {
        let isid: String = self.isid.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{SEPARATOR}{isid}", self.name)
    }
}

/// Where a TransportID is wrong: byte (and bit) offsets inside it, for the
/// SENSE KEY SPECIFIC field pointer (the caller adds the TransportID's own
/// offset in the parameter list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadField {
    pub byte: u16,
    pub bit: Option<u8>,
}

fn bad(byte: usize, bit: Option<u8>) -> BadField {
    BadField {
        byte: u16::try_from(byte).unwrap_or(u16::MAX),
        bit,
    }
}

/// Encodes the initiator port `initiator_port` ("<name>,i,0x<isid>") as a
/// format 01b TransportID.
pub fn encode(initiator_port: &str) -> Vec<u8> {
    let mut name = initiator_port.as_bytes().to_vec();
    name.push(0);
    while !name.len().is_multiple_of(4) || name.len() < MIN_ADDITIONAL_LENGTH {
        name.push(0);
    }
    let mut tid = Vec::with_capacity(4 + name.len());
    tid.push(FORMAT_PORT | PROTOCOL_ISCSI);
    tid.push(0);
    tid.extend_from_slice(&(name.len() as u16).to_be_bytes());
    tid.extend_from_slice(&name);
    tid
}

/// Parses a format 01b iSCSI TransportID that fills `tid` exactly (the
/// caller cuts it out of the parameter list by its stated length).
pub fn parse_port(tid: &[u8]) -> Result<IscsiPortId, BadField> {
    if tid.len() < 4 + MIN_ADDITIONAL_LENGTH {
        return Err(bad(2, None));
    }
    if tid[0] & 0x0F != PROTOCOL_ISCSI {
        return Err(bad(0, Some(3)));
    }
    // Format 00b (device name only) cannot name an I_T nexus; 10b/11b are
    // reserved.
    if tid[0] & 0xC0 != FORMAT_PORT {
        return Err(bad(0, Some(7)));
    }
    let additional = usize::from(u16::from_be_bytes([tid[2], tid[3]]));
    if additional < MIN_ADDITIONAL_LENGTH
        || !additional.is_multiple_of(4)
        || 4 + additional != tid.len()
    {
        return Err(bad(2, None));
    }
    let field = &tid[4..];
    // "null-terminated": a name that runs to the end is malformed.
    let Some(end) = field.iter().position(|&b| b == 0) else {
        return Err(bad(4, None));
    };
    let Ok(text) = std::str::from_utf8(&field[..end]) else {
        return Err(bad(4, None));
    };
    let lower = text.to_ascii_lowercase();
    let Some(sep) = lower.rfind(SEPARATOR) else {
        return Err(bad(4, None));
    };
    let (name, hex) = (&text[..sep], &text[sep + SEPARATOR.len()..]);
    let isid_at = 4 + sep + SEPARATOR.len();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(isid_at, None));
    }
    let mut isid = [0u8; 6];
    for (i, b) in isid.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad(isid_at, None))?;
    }
    // The names the target accepts at login (RFC 3722, '_' tolerated).
    if IscsiName::parse_lenient(name).is_err() {
        return Err(bad(4, None));
    }
    Ok(IscsiPortId {
        name: name.to_string(),
        isid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: &str = "iqn.2024-01.org.example:host-b,i,0x80123456000b";

    #[test]
    fn round_trip_and_padding() {
        let tid = encode(PORT);
        assert_eq!(tid[0], 0x45);
        assert_eq!(tid.len() % 4, 0);
        assert_eq!(
            usize::from(u16::from_be_bytes([tid[2], tid[3]])),
            tid.len() - 4
        );
        let p = parse_port(&tid).unwrap();
        assert_eq!(p.name, "iqn.2024-01.org.example:host-b");
        assert_eq!(p.isid, [0x80, 0x12, 0x34, 0x56, 0x00, 0x0b]);
        assert_eq!(p.initiator_port(), PORT);
        // Short names are padded to the 20-byte minimum.
        assert_eq!(encode("a,i,0x1").len(), 24);
    }

    #[test]
    fn upper_case_separator_and_isid_are_accepted() {
        let tid = encode("iqn.2024-01.org.example:h,I,0X80123456000B");
        let p = parse_port(&tid).unwrap();
        assert_eq!(
            p.initiator_port(),
            "iqn.2024-01.org.example:h,i,0x80123456000b"
        );
    }

    #[test]
    fn malformed_ids_point_at_the_field() {
        let good = encode(PORT);
        let mut fc = good.clone();
        fc[0] = 0x83; // FC protocol
        assert_eq!(parse_port(&fc), Err(bad(0, Some(3))));
        let mut device = good.clone();
        device[0] = 0x05; // format 00b: no ISID
        assert_eq!(parse_port(&device), Err(bad(0, Some(7))));
        assert_eq!(parse_port(&good[..good.len() - 4]), Err(bad(2, None)));
        assert_eq!(parse_port(&good[..8]), Err(bad(2, None)));
        let mut no_nul = good.clone();
        let n = no_nul.len();
        no_nul[4..n].fill(b'a');
        assert_eq!(parse_port(&no_nul), Err(bad(4, None)));
        assert!(parse_port(&encode("iqn.2024-01.org.example:h,i,0x8012")).is_err());
        assert!(parse_port(&encode("iqn.2024-01.org.example:h,i,0x80123456000g")).is_err());
        assert!(parse_port(&encode("iqn.2024-01.org.example:h")).is_err());
        assert!(parse_port(&encode("not a name,i,0x80123456000b")).is_err());
        let mut bad_utf8 = good;
        bad_utf8[5] = 0xFF;
        assert_eq!(parse_port(&bad_utf8), Err(bad(4, None)));
    }
}
