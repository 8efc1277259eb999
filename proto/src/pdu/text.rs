//! Text Request (RFC 7143 §11.10) and Text Response (RFC 7143 §11.11).

use bytes::Bytes;

use crate::serial::{CmdSn, StatSn};

use super::bhs::{Bhs, BhsMut, FLAGS};
use super::{Body, Opcode};

const CONTINUE_BIT: u8 = 0x40;
const TTT: usize = 20;
const CMD_SN: usize = 24;
const EXP_STAT_SN: usize = 28;
const STAT_SN: usize = 24;
const EXP_CMD_SN: usize = 28;
const MAX_CMD_SN: usize = 32;

/// Text Request, RFC 7143 §11.10:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|I| 0x04      |F|C| Reserved                                  |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| Logical Unit Number (LUN) or Reserved                         |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| Target Transfer Tag or 0xffffffff                             |
///    +---------------+---------------+---------------+---------------+
///  24| CmdSN                                                         |
///    +---------------+---------------+---------------+---------------+
///  28| ExpStatSN                                                     |
///    +---------------+---------------+---------------+---------------+
///  32/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional) / DataSegment (Text)                 /
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    /// F: the last PDU of a text request sequence.
    pub final_: bool,
    /// C: the text continues in the next PDU.
    pub continue_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    pub data: Bytes,
}

impl Body for TextRequest {
    const OPCODE: Opcode = Opcode::TEXT_REQUEST;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(TextRequest {
            immediate: h.immediate(),
            final_: h.final_bit(),
            continue_: h.flag(FLAGS, CONTINUE_BIT),
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
        b.set_final(self.final_);
        b.set_flag(FLAGS, CONTINUE_BIT, self.continue_);
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

/// Text Response, RFC 7143 §11.11:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x24      |F|C| Reserved                                  |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| Logical Unit Number (LUN) or Reserved                         |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
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
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional) / DataSegment (Text)                 /
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextResponse {
    pub final_: bool,
    pub continue_: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub data: Bytes,
}

impl Body for TextResponse {
    const OPCODE: Opcode = Opcode::TEXT_RESPONSE;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(TextResponse {
            final_: h.final_bit(),
            continue_: h.flag(FLAGS, CONTINUE_BIT),
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
        b.set_final(self.final_);
        b.set_flag(FLAGS, CONTINUE_BIT, self.continue_);
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
    use super::super::test_util::check_fixture;
    use super::super::Pdu;
    use super::*;

    #[test]
    fn send_targets_request_fixture() {
        check_fixture(
            &[
                "44 80 00 00", // I, opcode 4, F
                "00 00 00 10", // DataSegmentLength 16
                "00 00 00 00 00 00 00 00",
                "00 00 00 02", // ITT
                "ff ff ff ff", // TTT
                "00 00 00 01",
                "00 00 00 01",
                "00000000 00000000 00000000 00000000",
                "53 65 6e 64 54 61 72 67 65 74 73 3d 41 6c 6c 00", // SendTargets=All\0
            ],
            Pdu::TextRequest(TextRequest {
                immediate: true,
                final_: true,
                continue_: false,
                lun: 0,
                itt: 2,
                ttt: 0xffff_ffff,
                cmd_sn: CmdSn::new(1),
                exp_stat_sn: StatSn::new(1),
                data: Bytes::from_static(b"SendTargets=All\0"),
            }),
        );
    }

    #[test]
    fn continued_text_response_fixture() {
        check_fixture(
            &[
                "24 40 00 00", // C (continues), not final
                "00 00 00 02",
                "00 00 00 00 00 00 00 00",
                "00 00 00 02",
                "00 00 00 77", // TTT for the continuation
                "00 00 00 02",
                "00 00 00 02",
                "00 00 00 11",
                "00000000 00000000 00000000",
                "54 61 00 00", // "Ta" + pad
            ],
            Pdu::TextResponse(TextResponse {
                final_: false,
                continue_: true,
                lun: 0,
                itt: 2,
                ttt: 0x77,
                stat_sn: StatSn::new(2),
                exp_cmd_sn: CmdSn::new(2),
                max_cmd_sn: CmdSn::new(0x11),
                data: Bytes::from_static(b"Ta"),
            }),
        );
    }
}
