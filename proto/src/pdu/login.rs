//! Login Request (RFC 7143 §11.12) and Login Response (RFC 7143 §11.13).

use bytes::Bytes;

use crate::serial::{CmdSn, StatSn};

use super::bhs::{Bhs, BhsMut, FLAGS};
use super::{Body, Opcode};

const TRANSIT_BIT: u8 = 0x80;
const CONTINUE_BIT: u8 = 0x40;
const CSG_SHIFT: u8 = 2;
const STAGE_MASK: u8 = 0x03;
const VERSION_MAX: usize = 2;
/// Version-min in a request, Version-active in a response.
const VERSION_MIN: usize = 3;
const ISID: usize = 8;
const TSIH: usize = 14;
const CID: usize = 20;
const CMD_SN: usize = 24;
const EXP_STAT_SN: usize = 28;
const STAT_SN: usize = 24;
const EXP_CMD_SN: usize = 28;
const MAX_CMD_SN: usize = 32;
const STATUS_CLASS: usize = 36;
const STATUS_DETAIL: usize = 37;

/// Login stage (CSG/NSG), RFC 7143 §11.12.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Stage {
    #[default]
    SecurityNegotiation = 0,
    LoginOperationalNegotiation = 1,
    /// Value 2 is reserved; kept so that decoding is total and re-encodes.
    /// The login state machine must refuse it.
    Reserved = 2,
    FullFeaturePhase = 3,
}

impl Stage {
    /// Stage from the 2-bit field value (higher bits ignored).
    pub fn from_bits(v: u8) -> Stage {
        match v & STAGE_MASK {
            0 => Stage::SecurityNegotiation,
            1 => Stage::LoginOperationalNegotiation,
            2 => Stage::Reserved,
            _ => Stage::FullFeaturePhase,
        }
    }

    /// The 2-bit field value.
    pub fn bits(self) -> u8 {
        self as u8
    }
}

/// The 6-byte Initiator Session ID (RFC 7143 §11.12.5): T(2 bits) A(6) B(16) C(8) D(16).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Isid(pub [u8; 6]);

impl Isid {
    /// The ISID type, the top 2 bits (00 OUI, 01 EN, 10 random, 11 reserved).
    pub fn isid_type(&self) -> u8 {
        self.0[0] >> 6
    }

    /// The ISID as a 48-bit integer.
    pub fn to_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&self.0);
        u64::from_be_bytes(b)
    }

    /// The ISID from the low 48 bits of `v`.
    pub fn from_u64(v: u64) -> Isid {
        let b = v.to_be_bytes();
        let mut o = [0u8; 6];
        o.copy_from_slice(&b[2..]);
        Isid(o)
    }
}

impl core::fmt::Debug for Isid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Isid({:#014x})", self.to_u64())
    }
}

impl core::fmt::Display for Isid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:012x}", self.to_u64())
    }
}

impl From<[u8; 6]> for Isid {
    fn from(b: [u8; 6]) -> Self {
        Isid(b)
    }
}

fn get_isid(h: &Bhs<'_>) -> Isid {
    let mut isid = [0u8; 6];
    isid.copy_from_slice(&h.0[ISID..ISID + 6]);
    Isid(isid)
}

fn stage_flags(transit: bool, continue_: bool, csg: Stage, nsg: Stage) -> u8 {
    let mut f = (csg.bits() << CSG_SHIFT) | nsg.bits();
    if transit {
        f |= TRANSIT_BIT;
    }
    if continue_ {
        f |= CONTINUE_BIT;
    }
    f
}

/// Login Request, RFC 7143 §11.12:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|1| 0x03      |T|C|.|.|CSG|NSG| Version-max   | Version-min   |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| ISID                                                          |
///    +                               +---------------+---------------+
///  12|                               | TSIH                          |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| CID                           | Reserved                      |
///    +---------------+---------------+---------------+---------------+
///  24| CmdSN                                                         |
///    +---------------+---------------+---------------+---------------+
///  28| ExpStatSN or Reserved                                         |
///    +---------------+---------------+---------------+---------------+
///  32| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  36| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  40/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  48/ DataSegment - Login Parameters in Text Request Format        /
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// T: the initiator is ready to move to `nsg`.
    pub transit: bool,
    /// C: the text in the data segment continues in the next PDU.
    pub continue_: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: Isid,
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    /// Text key=value pairs (RFC 7143 §6).
    pub data: Bytes,
}

impl Body for LoginRequest {
    const OPCODE: Opcode = Opcode::LOGIN_REQUEST;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        let f = h.u8(FLAGS);
        Ok(LoginRequest {
            transit: f & TRANSIT_BIT != 0,
            continue_: f & CONTINUE_BIT != 0,
            csg: Stage::from_bits(f >> CSG_SHIFT),
            nsg: Stage::from_bits(f),
            version_max: h.u8(VERSION_MAX),
            version_min: h.u8(VERSION_MIN),
            isid: get_isid(&h),
            tsih: h.u16(TSIH),
            itt: h.itt(),
            cid: h.u16(CID),
            cmd_sn: h.sn(CMD_SN),
            exp_stat_sn: h.sn(EXP_STAT_SN),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        // RFC 7143 §11.12: the I bit is always 1 in a Login Request.
        b.set_immediate(true);
        b.set_u8(
            FLAGS,
            stage_flags(self.transit, self.continue_, self.csg, self.nsg),
        );
        b.set_u8(VERSION_MAX, self.version_max);
        b.set_u8(VERSION_MIN, self.version_min);
        b.0[ISID..ISID + 6].copy_from_slice(&self.isid.0);
        b.set_u16(TSIH, self.tsih);
        b.set_itt(self.itt);
        b.set_u16(CID, self.cid);
        b.set_sn(CMD_SN, self.cmd_sn);
        b.set_sn(EXP_STAT_SN, self.exp_stat_sn);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

/// Login Response, RFC 7143 §11.13:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x23      |T|C|.|.|CSG|NSG| Version-max   |Version-active |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| ISID                                                          |
///    +                               +---------------+---------------+
///  12|                               | TSIH                          |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  24| StatSN                                                        |
///    +---------------+---------------+---------------+---------------+
///  28| ExpCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  32| MaxCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  36| Status-Class  | Status-Detail | Reserved                      |
///    +---------------+---------------+---------------+---------------+
///  40/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  48/ DataSegment - Login Parameters in Text Request Format        /
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub continue_: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: Isid,
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    /// RFC 7143 §11.13.5: 0 success, 1 redirection, 2 initiator error, 3 target error.
    pub status_class: u8,
    pub status_detail: u8,
    pub data: Bytes,
}

impl Body for LoginResponse {
    const OPCODE: Opcode = Opcode::LOGIN_RESPONSE;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        let f = h.u8(FLAGS);
        Ok(LoginResponse {
            transit: f & TRANSIT_BIT != 0,
            continue_: f & CONTINUE_BIT != 0,
            csg: Stage::from_bits(f >> CSG_SHIFT),
            nsg: Stage::from_bits(f),
            version_max: h.u8(VERSION_MAX),
            version_active: h.u8(VERSION_MIN),
            isid: get_isid(&h),
            tsih: h.u16(TSIH),
            itt: h.itt(),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
            status_class: h.u8(STATUS_CLASS),
            status_detail: h.u8(STATUS_DETAIL),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_u8(
            FLAGS,
            stage_flags(self.transit, self.continue_, self.csg, self.nsg),
        );
        b.set_u8(VERSION_MAX, self.version_max);
        b.set_u8(VERSION_MIN, self.version_active);
        b.0[ISID..ISID + 6].copy_from_slice(&self.isid.0);
        b.set_u16(TSIH, self.tsih);
        b.set_itt(self.itt);
        b.set_sn(STAT_SN, self.stat_sn);
        b.set_sn(EXP_CMD_SN, self.exp_cmd_sn);
        b.set_sn(MAX_CMD_SN, self.max_cmd_sn);
        b.set_u8(STATUS_CLASS, self.status_class);
        b.set_u8(STATUS_DETAIL, self.status_detail);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{check_fixture, hx};
    use super::super::{DigestConfig, Pdu};
    use super::*;

    #[test]
    fn login_request_fixture() {
        check_fixture(
            &[
                "43 87 00 00",       // I, opcode 3; T, CSG 1, NSG 3; version-max/min 0
                "00 00 00 19",       // DataSegmentLength 25
                "80 12 34 56 78 9a", // ISID: type 2 (random)
                "00 00",             // TSIH 0: new session
                "00 00 00 01",       // ITT
                "00 01 00 00",       // CID 1
                "00 00 00 05",       // CmdSN
                "00 00 00 00",       // ExpStatSN
                "00000000 00000000 00000000 00000000",
                // "SessionType=Discovery\0S=\0" + 3 pad bytes
                "53 65 73 73 69 6f 6e 54 79 70 65 3d 44 69 73 63 6f 76 65 72 79 00",
                "53 3d 00 00 00 00",
            ],
            Pdu::LoginRequest(LoginRequest {
                transit: true,
                continue_: false,
                csg: Stage::LoginOperationalNegotiation,
                nsg: Stage::FullFeaturePhase,
                version_max: 0,
                version_min: 0,
                isid: Isid([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]),
                tsih: 0,
                itt: 1,
                cid: 1,
                cmd_sn: CmdSn::new(5),
                exp_stat_sn: StatSn::new(0),
                data: Bytes::from_static(b"SessionType=Discovery\0S=\0"),
            }),
        );
    }

    #[test]
    fn login_response_fixture() {
        check_fixture(
            &[
                "23 41 00 00", // C, CSG 0, NSG 1; version-max 0, version-active 0
                "00 00 00 04",
                "80 12 34 56 78 9a",
                "00 07", // TSIH
                "00 00 00 01",
                "00 00 00 00",
                "00 00 00 2c", // StatSN
                "00 00 00 05", // ExpCmdSN
                "00 00 00 06", // MaxCmdSN
                "02 01 00 00", // Status-Class 2, Status-Detail 1: authentication failure
                "00000000 00000000",
                "41 3d 42 00", // "A=B\0"
            ],
            Pdu::LoginResponse(LoginResponse {
                transit: false,
                continue_: true,
                csg: Stage::SecurityNegotiation,
                nsg: Stage::LoginOperationalNegotiation,
                version_max: 0,
                version_active: 0,
                isid: Isid([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]),
                tsih: 7,
                itt: 1,
                stat_sn: StatSn::new(0x2c),
                exp_cmd_sn: CmdSn::new(5),
                max_cmd_sn: CmdSn::new(6),
                status_class: 2,
                status_detail: 1,
                data: Bytes::from_static(b"A=B\0"),
            }),
        );
    }

    #[test]
    fn stages_and_reserved_stage() {
        for v in 0..4u8 {
            assert_eq!(Stage::from_bits(v).bits(), v);
        }
        // CSG 2 (reserved) decodes and re-encodes unchanged; refusing it is
        // the login state machine's job.
        let wire = hx(&[
            "43 0b 00 00",
            "00 00 00 00",
            "00 00 00 00 00 00 00 00",
            "00 00 00 01",
            "00000000 00000000 00000000 00000000 00000000 00000000 00000000",
        ]);
        let pdu = Pdu::decode(wire.clone(), DigestConfig::NONE).unwrap();
        let Pdu::LoginRequest(r) = &pdu else { panic!() };
        assert_eq!((r.csg, r.nsg), (Stage::Reserved, Stage::FullFeaturePhase));
        assert_eq!(pdu.encode(DigestConfig::NONE).to_bytes(), wire);
    }

    #[test]
    fn isid_helpers() {
        let isid = Isid::from_u64(0x8012_3456_789a);
        assert_eq!(isid.0, [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!(isid.to_u64(), 0x8012_3456_789a);
        assert_eq!(isid.isid_type(), 2);
        assert_eq!(isid.to_string(), "80123456789a");
        assert_eq!(format!("{isid:?}"), "Isid(0x80123456789a)");
    }

    #[test]
    fn login_request_always_has_i_bit() {
        let req = LoginRequest {
            transit: false,
            continue_: false,
            csg: Stage::SecurityNegotiation,
            nsg: Stage::SecurityNegotiation,
            version_max: 0,
            version_min: 0,
            isid: Isid::default(),
            tsih: 0,
            itt: 0,
            cid: 0,
            cmd_sn: CmdSn::new(0),
            exp_stat_sn: StatSn::new(0),
            data: Bytes::new(),
        };
        let enc = Pdu::from(req).encode(DigestConfig::NONE);
        assert_eq!(enc.header[0], 0x43);
        assert!(Pdu::decode(enc.to_bytes(), DigestConfig::NONE)
            .unwrap()
            .immediate());
    }
}
