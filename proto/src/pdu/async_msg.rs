//! Asynchronous Message (RFC 7143 §11.9) and Reject (RFC 7143 §11.17).

use bytes::Bytes;

use crate::serial::{CmdSn, SerialNumber, StatSn};

use super::bhs::{open_enum, Bhs, BhsMut};
use super::{Body, Opcode, RESERVED_TAG};

const STAT_SN: usize = 24;
const EXP_CMD_SN: usize = 28;
const MAX_CMD_SN: usize = 32;
const ASYNC_EVENT: usize = 36;
const ASYNC_VCODE: usize = 37;
const PARAMETER1: usize = 38;
const PARAMETER2: usize = 40;
const PARAMETER3: usize = 42;
const REASON: usize = 2;
const DATA_SN_OR_R2T_SN: usize = 36;

open_enum! {
    /// AsyncEvent codes, RFC 7143 §11.9.1.
    pub struct AsyncEvent(u8) {
        SCSI_ASYNC_EVENT = 0,
        LOGOUT_REQUEST = 1,
        CONNECTION_DROP = 2,
        SESSION_DROP = 3,
        NEGOTIATION_REQUEST = 4,
        TASK_TERMINATION = 5,
        VENDOR_SPECIFIC = 255,
    }
}

open_enum! {
    /// Reject reason codes, RFC 7143 §11.17.1.
    pub struct RejectReason(u8) {
        RESERVED = 0x01,
        DATA_DIGEST_ERROR = 0x02,
        SNACK_REJECT = 0x03,
        PROTOCOL_ERROR = 0x04,
        COMMAND_NOT_SUPPORTED = 0x05,
        IMMEDIATE_COMMAND_REJECT = 0x06,
        TASK_IN_PROGRESS = 0x07,
        INVALID_DATA_ACK = 0x08,
        INVALID_PDU_FIELD = 0x09,
        LONG_OP_REJECT = 0x0a,
        DEPRECATED_NEGOTIATION_RESET = 0x0b,
        WAITING_FOR_LOGOUT = 0x0c,
    }
}

/// Asynchronous Message, RFC 7143 §11.9:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x32      |1| Reserved                                    |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| LUN or Reserved                                               |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| 0xffffffff                                                    |
///    +---------------+---------------+---------------+---------------+
///  20| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  24| StatSN                                                        |
///    +---------------+---------------+---------------+---------------+
///  28| ExpCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  32| MaxCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  36| AsyncEvent    | AsyncVCode    | Parameter1 or Reserved        |
///    +---------------+---------------+---------------+---------------+
///  40| Parameter2 or Reserved        | Parameter3 or Reserved        |
///    +---------------+---------------+---------------+---------------+
///  44| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional)                                      |
///    / DataSegment - Sense Data and iSCSI Event Data                 /
/// ```
///
/// The ITT field is always 0xffffffff and is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: u64,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub async_event: AsyncEvent,
    pub async_vcode: u8,
    pub parameter1: u16,
    pub parameter2: u16,
    pub parameter3: u16,
    /// SenseLength + sense data + iSCSI event data (RFC 7143 §11.9.4).
    pub data: Bytes,
}

impl Body for AsyncMessage {
    const OPCODE: Opcode = Opcode::ASYNC_MESSAGE;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(AsyncMessage {
            lun: h.lun(),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
            async_event: AsyncEvent(h.u8(ASYNC_EVENT)),
            async_vcode: h.u8(ASYNC_VCODE),
            parameter1: h.u16(PARAMETER1),
            parameter2: h.u16(PARAMETER2),
            parameter3: h.u16(PARAMETER3),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_final(true);
        b.set_lun(self.lun);
        b.set_itt(RESERVED_TAG);
        b.set_sn(STAT_SN, self.stat_sn);
        b.set_sn(EXP_CMD_SN, self.exp_cmd_sn);
        b.set_sn(MAX_CMD_SN, self.max_cmd_sn);
        b.set_u8(ASYNC_EVENT, self.async_event.0);
        b.set_u8(ASYNC_VCODE, self.async_vcode);
        b.set_u16(PARAMETER1, self.parameter1);
        b.set_u16(PARAMETER2, self.parameter2);
        b.set_u16(PARAMETER3, self.parameter3);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

/// Reject, RFC 7143 §11.17:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x3f      |1| Reserved    | Reason        | Reserved      |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  16| 0xffffffff                                                    |
///    +---------------+---------------+---------------+---------------+
///  20| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  24| StatSN                                                        |
///    +---------------+---------------+---------------+---------------+
///  28| ExpCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  32| MaxCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  36| DataSN/R2TSN or Reserved                                      |
///    +---------------+---------------+---------------+---------------+
///  40| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  44| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional)                                      |
///    +---------------+---------------+---------------+---------------+
///  xx/ Complete Header of Bad PDU                                    /
/// ```
///
/// The ITT field is always 0xffffffff and is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub data_sn_or_r2t_sn: SerialNumber,
    /// RFC 7143 §11.17: the complete header (BHS, and AHS if any) of the bad PDU.
    pub data: Bytes,
}

impl Reject {
    /// The ITT of the rejected PDU, read from the carried header.
    pub fn rejected_itt(&self) -> Option<u32> {
        let b = self.data.get(16..20)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The opcode of the rejected PDU, read from the carried header.
    pub fn rejected_opcode(&self) -> Option<super::Opcode> {
        let b = self.data.first()?;
        Some(super::Opcode(b & super::bhs::OPCODE_MASK))
    }
}

impl Body for Reject {
    const OPCODE: Opcode = Opcode::REJECT;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(Reject {
            reason: RejectReason(h.u8(REASON)),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
            data_sn_or_r2t_sn: h.sn(DATA_SN_OR_R2T_SN),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_final(true);
        b.set_u8(REASON, self.reason.0);
        b.set_itt(RESERVED_TAG);
        b.set_sn(STAT_SN, self.stat_sn);
        b.set_sn(EXP_CMD_SN, self.exp_cmd_sn);
        b.set_sn(MAX_CMD_SN, self.max_cmd_sn);
        b.set_sn(DATA_SN_OR_R2T_SN, self.data_sn_or_r2t_sn);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::check_fixture;
    use super::super::{DigestConfig, Pdu};
    use super::*;

    #[test]
    fn async_logout_request_fixture() {
        check_fixture(
            &[
                "32 80 00 00",
                "00 00 00 00",
                "00 00 00 00 00 00 00 00",
                "ff ff ff ff",
                "00 00 00 00",
                "00 00 00 11",
                "00 00 00 12",
                "00 00 00 31",
                "01 00 00 00", // AsyncEvent 1: logout requested; Parameter1 0
                "00 00 00 05", // Parameter2 0, Parameter3 5
                "00 00 00 00",
            ],
            Pdu::AsyncMessage(AsyncMessage {
                lun: 0,
                stat_sn: StatSn::new(0x11),
                exp_cmd_sn: CmdSn::new(0x12),
                max_cmd_sn: CmdSn::new(0x31),
                async_event: AsyncEvent::LOGOUT_REQUEST,
                async_vcode: 0,
                parameter1: 0,
                parameter2: 0,
                parameter3: 5,
                data: Bytes::new(),
            }),
        );
    }

    #[test]
    fn reject_fixture_carries_bad_header() {
        let mut bad = [0u8; 48];
        bad[0] = 0x1d; // the rejected PDU's opcode
        bad[16..20].copy_from_slice(&0x55u32.to_be_bytes());
        let reject = Reject {
            reason: RejectReason::COMMAND_NOT_SUPPORTED,
            stat_sn: StatSn::new(3),
            exp_cmd_sn: CmdSn::new(4),
            max_cmd_sn: CmdSn::new(0x23),
            data_sn_or_r2t_sn: SerialNumber::new(0),
            data: Bytes::copy_from_slice(&bad),
        };
        assert_eq!(reject.rejected_itt(), Some(0x55));
        let bad_hex = hex::encode(bad);
        check_fixture(
            &[
                "3f 80 05 00", // reason 5: command not supported
                "00 00 00 30", // 48 bytes: the bad BHS
                "00000000 00000000",
                "ff ff ff ff",
                "00 00 00 00",
                "00 00 00 03",
                "00 00 00 04",
                "00 00 00 23",
                "00 00 00 00",
                "00000000 00000000",
                &bad_hex,
            ],
            Pdu::Reject(reject),
        );
    }

    #[test]
    fn unknown_reason_and_event_round_trip() {
        let r = Pdu::Reject(Reject {
            reason: RejectReason(0x42),
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data_sn_or_r2t_sn: SerialNumber::new(9),
            data: Bytes::new(),
        });
        let back = Pdu::decode(r.encode(DigestConfig::NONE).to_bytes(), DigestConfig::NONE);
        assert_eq!(back.as_ref(), Ok(&r));
        let a = Pdu::AsyncMessage(AsyncMessage {
            lun: 0,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            async_event: AsyncEvent(0x77),
            async_vcode: 0x12,
            parameter1: 1,
            parameter2: 2,
            parameter3: 3,
            data: Bytes::from_static(b"\x00\x00event"),
        });
        let back = Pdu::decode(a.encode(DigestConfig::BOTH).to_bytes(), DigestConfig::BOTH);
        assert_eq!(back.as_ref(), Ok(&a));
        assert_eq!(
            format!("{:?}", RejectReason(0x42)),
            "RejectReason(Unknown(0x42))"
        );
    }
}
