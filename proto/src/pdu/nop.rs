//! NOP-Out (RFC 7143 §11.18) and NOP-In (RFC 7143 §11.19).

use bytes::Bytes;

use crate::serial::{CmdSn, StatSn};

use super::bhs::{Bhs, BhsMut};
use super::{Body, Opcode};

const TTT: usize = 20;
const CMD_SN: usize = 24;
const EXP_STAT_SN: usize = 28;
const STAT_SN: usize = 24;
const EXP_CMD_SN: usize = 28;
const MAX_CMD_SN: usize = 32;

/// NOP-Out, RFC 7143 §11.18:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|I| 0x00      |1| Reserved                                    |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| LUN or Reserved                                               |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag or 0xffffffff                              |
///    +---------------+---------------+---------------+---------------+
///  20| Target Transfer Tag or 0xffffffff                             |
///    +---------------+---------------+---------------+---------------+
///  24| CmdSN                                                         |
///    +---------------+---------------+---------------+---------------+
///  28| ExpStatSN                                                     |
///    +---------------+---------------+---------------+---------------+
///  32/ Reserved                                                      /
///  48| Header-Digest (optional) / DataSegment - Ping Data (optional) |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: u64,
    /// 0xffffffff when this NOP-Out answers a NOP-In (no NOP-In expected back).
    pub itt: u32,
    /// 0xffffffff unless this NOP-Out answers a NOP-In.
    pub ttt: u32,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    /// Ping data.
    pub data: Bytes,
}

impl Body for NopOut {
    const OPCODE: Opcode = Opcode::NOP_OUT;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(NopOut {
            immediate: h.immediate(),
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32(TTT),
            cmd_sn: h.sn(CMD_SN),
            exp_stat_sn: h.sn(EXP_STAT_SN),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_immediate(self.immediate);
        // RFC 7143 §11.18: byte 1 bit 7 is always 1.
        b.set_final(true);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32(TTT, self.ttt);
        b.set_sn(CMD_SN, self.cmd_sn);
        b.set_sn(EXP_STAT_SN, self.exp_stat_sn);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

/// NOP-In, RFC 7143 §11.19:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x20      |1| Reserved                                    |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| LUN or Reserved                                               |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag or 0xffffffff                              |
///    +---------------+---------------+---------------+---------------+
///  20| Target Transfer Tag or 0xffffffff                             |
///    +---------------+---------------+---------------+---------------+
///  24| StatSN                                                        |
///    +---------------+---------------+---------------+---------------+
///  28| ExpCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  32| MaxCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  36/ Reserved                                                      /
///  48| Header-Digest (optional) / DataSegment - Return Ping Data     |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NopIn {
    pub lun: u64,
    /// 0xffffffff for a target-initiated NOP-In.
    pub itt: u32,
    /// Not 0xffffffff when the target wants a NOP-Out back.
    pub ttt: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub data: Bytes,
}

impl Body for NopIn {
    const OPCODE: Opcode = Opcode::NOP_IN;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(NopIn {
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32(TTT),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_final(true);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32(TTT, self.ttt);
        b.set_sn(STAT_SN, self.stat_sn);
        b.set_sn(EXP_CMD_SN, self.exp_cmd_sn);
        b.set_sn(MAX_CMD_SN, self.max_cmd_sn);
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
    fn nop_out_fixture() {
        check_fixture(
            &[
                "40 80 00 00",             // I, opcode 0x00, bit 7 of byte 1
                "00 00 00 05",             // TotalAHSLength 0, DataSegmentLength 5
                "00 01 00 00 00 00 00 00", // LUN 1
                "00 00 00 11",             // ITT
                "ff ff ff ff",             // TTT
                "00 00 00 07",             // CmdSN
                "00 00 00 03",             // ExpStatSN
                "00000000 00000000 00000000 00000000",
                "68 65 6c 6c 6f 00 00 00", // "hello" + 3 pad bytes
            ],
            Pdu::NopOut(NopOut {
                immediate: true,
                lun: 0x0001_0000_0000_0000,
                itt: 0x11,
                ttt: 0xffff_ffff,
                cmd_sn: CmdSn::new(7),
                exp_stat_sn: StatSn::new(3),
                data: Bytes::from_static(b"hello"),
            }),
        );
    }

    #[test]
    fn nop_in_fixture() {
        check_fixture(
            &[
                "20 80 00 00",
                "00 00 00 00",
                "00 00 00 00 00 00 00 00",
                "ff ff ff ff", // target-initiated: ITT reserved
                "00 00 12 34", // TTT: a NOP-Out is wanted back
                "00 00 00 10", // StatSN
                "00 00 00 08", // ExpCmdSN
                "00 00 00 27", // MaxCmdSN
                "00000000 00000000 00000000",
            ],
            Pdu::NopIn(NopIn {
                lun: 0,
                itt: 0xffff_ffff,
                ttt: 0x1234,
                stat_sn: StatSn::new(0x10),
                exp_cmd_sn: CmdSn::new(8),
                max_cmd_sn: CmdSn::new(0x27),
                data: Bytes::new(),
            }),
        );
    }

    #[test]
    fn reserved_bits_are_ignored_on_receipt() {
        // RFC 7143 §11.2.1: reserved fields are ignored by the receiver.
        let mut wire = hx(&[
            "20 80 ff 00", // reserved byte 2 set
            "00 00 00 00",
            "00 00 00 00 00 00 00 00",
            "ff ff ff ff",
            "00 00 12 34",
            "00 00 00 10",
            "00 00 00 08",
            "00 00 00 27",
            "00000000 00000000 000000ff", // reserved tail set
        ])
        .to_vec();
        let pdu = Pdu::decode(Bytes::from(wire.clone()), DigestConfig::NONE).unwrap();
        let Pdu::NopIn(n) = &pdu else { panic!() };
        assert_eq!((n.ttt, n.stat_sn.get()), (0x1234, 0x10));
        // Re-encoding writes zeros there.
        wire[2] = 0;
        wire[47] = 0;
        assert_eq!(&pdu.encode(DigestConfig::NONE).to_bytes()[..], &wire[..]);
    }
}
