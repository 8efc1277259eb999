//! Logout Request (RFC 7143 §11.14) and Logout Response (RFC 7143 §11.15).

use bytes::Bytes;

use crate::serial::{CmdSn, StatSn};

use super::bhs::{open_enum, Bhs, BhsMut, FLAGS};
use super::{Body, Opcode};

const REASON_MASK: u8 = 0x7f;
const CID: usize = 20;
const CMD_SN: usize = 24;
const EXP_STAT_SN: usize = 28;
const RESPONSE: usize = 2;
const STAT_SN: usize = 24;
const EXP_CMD_SN: usize = 28;
const MAX_CMD_SN: usize = 32;
const TIME2WAIT: usize = 40;
const TIME2RETAIN: usize = 42;

open_enum! {
    /// Logout reason codes, RFC 7143 §11.14.1.
    pub struct LogoutReason(u8) {
        CLOSE_SESSION = 0,
        CLOSE_CONNECTION = 1,
        REMOVE_CONNECTION_FOR_RECOVERY = 2,
    }
}

open_enum! {
    /// Logout response codes, RFC 7143 §11.15.1.
    pub struct LogoutResponseCode(u8) {
        CLOSED_SUCCESSFULLY = 0,
        CID_NOT_FOUND = 1,
        CONNECTION_RECOVERY_NOT_SUPPORTED = 2,
        CLEANUP_FAILED = 3,
    }
}

/// Logout Request, RFC 7143 §11.14:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|I| 0x06      |1| Reason Code | Reserved                      |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| CID or Reserved               | Reserved                      |
///    +---------------+---------------+---------------+---------------+
///  24| CmdSN                                                         |
///    +---------------+---------------+---------------+---------------+
///  28| ExpStatSN                                                     |
///    +---------------+---------------+---------------+---------------+
///  32/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional)                                      |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason_code: LogoutReason,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    /// RFC 7143 §11.14: no data segment is defined; kept for faithful decoding.
    pub data: Bytes,
}

impl Body for LogoutRequest {
    const OPCODE: Opcode = Opcode::LOGOUT_REQUEST;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(LogoutRequest {
            immediate: h.immediate(),
            reason_code: LogoutReason(h.u8(FLAGS) & REASON_MASK),
            itt: h.itt(),
            cid: h.u16(CID),
            cmd_sn: h.sn(CMD_SN),
            exp_stat_sn: h.sn(EXP_STAT_SN),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_immediate(self.immediate);
        b.set_u8(FLAGS, 0x80 | (self.reason_code.0 & REASON_MASK));
        b.set_itt(self.itt);
        b.set_u16(CID, self.cid);
        b.set_sn(CMD_SN, self.cmd_sn);
        b.set_sn(EXP_STAT_SN, self.exp_stat_sn);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

/// Logout Response, RFC 7143 §11.15:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x26      |1| Reserved    | Response      | Reserved      |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8/ Reserved                                                      /
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
///  36| Reserved                                                      |
///    +---------------------------------------------------------------+
///  40| Time2Wait                     | Time2Retain                   |
///    +---------------+---------------+---------------+---------------+
///  44| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional)                                      |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: LogoutResponseCode,
    pub itt: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    /// Seconds to wait before reconnecting (connection recovery).
    pub time2wait: u16,
    /// Seconds the target keeps connection state after Time2Wait.
    pub time2retain: u16,
    /// RFC 7143 §11.15: no data segment is defined; kept for faithful decoding.
    pub data: Bytes,
}

impl Body for LogoutResponse {
    const OPCODE: Opcode = Opcode::LOGOUT_RESPONSE;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(LogoutResponse {
            response: LogoutResponseCode(h.u8(RESPONSE)),
            itt: h.itt(),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
            time2wait: h.u16(TIME2WAIT),
            time2retain: h.u16(TIME2RETAIN),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_final(true);
        b.set_u8(RESPONSE, self.response.0);
        b.set_itt(self.itt);
        b.set_sn(STAT_SN, self.stat_sn);
        b.set_sn(EXP_CMD_SN, self.exp_cmd_sn);
        b.set_sn(MAX_CMD_SN, self.max_cmd_sn);
        b.set_u16(TIME2WAIT, self.time2wait);
        b.set_u16(TIME2RETAIN, self.time2retain);
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
    fn logout_request_fixture() {
        check_fixture(
            &[
                "46 81 00 00", // I, opcode 6, reason 1: close the connection
                "00 00 00 00",
                "00000000 00000000",
                "00 00 00 05",
                "00 02 00 00", // CID 2
                "00 00 00 0e",
                "00 00 00 07",
                "00000000 00000000 00000000 00000000",
            ],
            Pdu::LogoutRequest(LogoutRequest {
                immediate: true,
                reason_code: LogoutReason::CLOSE_CONNECTION,
                itt: 5,
                cid: 2,
                cmd_sn: CmdSn::new(14),
                exp_stat_sn: StatSn::new(7),
                data: Bytes::new(),
            }),
        );
    }

    #[test]
    fn logout_response_fixture() {
        check_fixture(
            &[
                "26 80 02 00", // response 2: connection recovery not supported
                "00 00 00 00",
                "00000000 00000000",
                "00 00 00 05",
                "00 00 00 00",
                "00 00 00 07",
                "00 00 00 0f",
                "00 00 00 2e",
                "00 00 00 00",
                "00 02 00 14", // Time2Wait 2, Time2Retain 20
                "00 00 00 00",
            ],
            Pdu::LogoutResponse(LogoutResponse {
                response: LogoutResponseCode::CONNECTION_RECOVERY_NOT_SUPPORTED,
                itt: 5,
                stat_sn: StatSn::new(7),
                exp_cmd_sn: CmdSn::new(15),
                max_cmd_sn: CmdSn::new(0x2e),
                time2wait: 2,
                time2retain: 20,
                data: Bytes::new(),
            }),
        );
    }
}
