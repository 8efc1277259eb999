//! Task Management Function Request (RFC 7143 §11.5) and Response (§11.6).

use bytes::Bytes;

use crate::serial::{CmdSn, DataSn, StatSn};

use super::bhs::{open_enum, Bhs, BhsMut, FLAGS};
use super::{Body, Opcode};

const FUNCTION_MASK: u8 = 0x7f;
const REFERENCED_TASK_TAG: usize = 20;
const CMD_SN: usize = 24;
const EXP_STAT_SN: usize = 28;
const REF_CMD_SN: usize = 32;
const EXP_DATA_SN: usize = 36;

const RESPONSE: usize = 2;
const STAT_SN: usize = 24;
const EXP_CMD_SN: usize = 28;
const MAX_CMD_SN: usize = 32;

open_enum! {
    /// Task management function codes, RFC 7143 §11.5.1.
    pub struct TmfFunction(u8) {
        ABORT_TASK = 1,
        ABORT_TASK_SET = 2,
        CLEAR_ACA = 3,
        CLEAR_TASK_SET = 4,
        LOGICAL_UNIT_RESET = 5,
        TARGET_WARM_RESET = 6,
        TARGET_COLD_RESET = 7,
        TASK_REASSIGN = 8,
    }
}

open_enum! {
    /// Task management response codes, RFC 7143 §11.6.1.
    pub struct TmfResponse(u8) {
        FUNCTION_COMPLETE = 0,
        TASK_DOES_NOT_EXIST = 1,
        LUN_DOES_NOT_EXIST = 2,
        TASK_STILL_ALLEGIANT = 3,
        TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED = 4,
        TMF_NOT_SUPPORTED = 5,
        FUNCTION_AUTHORIZATION_FAILED = 6,
        FUNCTION_REJECTED = 255,
    }
}

/// Task Management Function Request, RFC 7143 §11.5:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|I| 0x02      |1| Function    | Reserved                      |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| Logical Unit Number (LUN) or Reserved                         |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| Referenced Task Tag or 0xffffffff                             |
///    +---------------+---------------+---------------+---------------+
///  24| CmdSN                                                         |
///    +---------------+---------------+---------------+---------------+
///  28| ExpStatSN                                                     |
///    +---------------+---------------+---------------+---------------+
///  32| RefCmdSN or Reserved                                          |
///    +---------------+---------------+---------------+---------------+
///  36| ExpDataSN or Reserved                                         |
///    +---------------+---------------+---------------+---------------+
///  40/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional)                                      |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: TmfFunction,
    pub lun: u64,
    pub itt: u32,
    pub referenced_task_tag: u32,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    pub ref_cmd_sn: CmdSn,
    pub exp_data_sn: DataSn,
    /// RFC 7143 §11.5: no data segment is defined; kept for faithful decoding.
    pub data: Bytes,
}

impl Body for TaskMgmtRequest {
    const OPCODE: Opcode = Opcode::TASK_MGMT_REQUEST;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(TaskMgmtRequest {
            immediate: h.immediate(),
            function: TmfFunction(h.u8(FLAGS) & FUNCTION_MASK),
            lun: h.lun(),
            itt: h.itt(),
            referenced_task_tag: h.u32(REFERENCED_TASK_TAG),
            cmd_sn: h.sn(CMD_SN),
            exp_stat_sn: h.sn(EXP_STAT_SN),
            ref_cmd_sn: h.sn(REF_CMD_SN),
            exp_data_sn: h.sn(EXP_DATA_SN),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_immediate(self.immediate);
        b.set_u8(FLAGS, 0x80 | (self.function.0 & FUNCTION_MASK));
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32(REFERENCED_TASK_TAG, self.referenced_task_tag);
        b.set_sn(CMD_SN, self.cmd_sn);
        b.set_sn(EXP_STAT_SN, self.exp_stat_sn);
        b.set_sn(REF_CMD_SN, self.ref_cmd_sn);
        b.set_sn(EXP_DATA_SN, self.exp_data_sn);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

/// Task Management Function Response, RFC 7143 §11.6:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x22      |1| Reserved    | Response      | Reserved      |
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
///  36/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional)                                      |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    pub response: TmfResponse,
    pub itt: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    /// RFC 7143 §11.6: no data segment is defined; kept for faithful decoding.
    pub data: Bytes,
}

impl Body for TaskMgmtResponse {
    const OPCODE: Opcode = Opcode::TASK_MGMT_RESPONSE;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(TaskMgmtResponse {
            response: TmfResponse(h.u8(RESPONSE)),
            itt: h.itt(),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
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
    fn abort_task_fixture() {
        check_fixture(
            &[
                "42 81 00 00", // I, opcode 2, function 1 ABORT TASK
                "00 00 00 00",
                "00 01 00 00 00 00 00 00",
                "00 00 00 40", // ITT
                "00 00 00 33", // Referenced Task Tag
                "00 00 00 0a", // CmdSN
                "00 00 00 05", // ExpStatSN
                "00 00 00 09", // RefCmdSN
                "00 00 00 02", // ExpDataSN
                "00000000 00000000",
            ],
            Pdu::TaskMgmtRequest(TaskMgmtRequest {
                immediate: true,
                function: TmfFunction::ABORT_TASK,
                lun: 0x0001_0000_0000_0000,
                itt: 0x40,
                referenced_task_tag: 0x33,
                cmd_sn: CmdSn::new(10),
                exp_stat_sn: StatSn::new(5),
                ref_cmd_sn: CmdSn::new(9),
                exp_data_sn: DataSn::new(2),
                data: Bytes::new(),
            }),
        );
    }

    #[test]
    fn tmf_response_fixture() {
        check_fixture(
            &[
                "22 80 05 00", // response 5: TMF not supported
                "00 00 00 00",
                "00000000 00000000",
                "00 00 00 40",
                "00 00 00 00",
                "00 00 00 06",
                "00 00 00 0b",
                "00 00 00 2a",
                "00000000 00000000 00000000",
            ],
            Pdu::TaskMgmtResponse(TaskMgmtResponse {
                response: TmfResponse::TMF_NOT_SUPPORTED,
                itt: 0x40,
                stat_sn: StatSn::new(6),
                exp_cmd_sn: CmdSn::new(11),
                max_cmd_sn: CmdSn::new(42),
                data: Bytes::new(),
            }),
        );
    }

    #[test]
    fn unknown_function_round_trips() {
        let req = TaskMgmtRequest {
            immediate: false,
            function: TmfFunction(0x7e),
            lun: 0,
            itt: 1,
            referenced_task_tag: 0xffff_ffff,
            cmd_sn: CmdSn::new(1),
            exp_stat_sn: StatSn::new(1),
            ref_cmd_sn: CmdSn::new(0),
            exp_data_sn: DataSn::new(0),
            data: Bytes::new(),
        };
        assert_eq!(format!("{:?}", req.function), "TmfFunction(Unknown(0x7e))");
        let wire = Pdu::from(req.clone()).encode(DigestConfig::NONE).to_bytes();
        assert_eq!(wire[1], 0xfe);
        assert_eq!(
            Pdu::decode(wire, DigestConfig::NONE),
            Ok(Pdu::TaskMgmtRequest(req))
        );
        assert_eq!(TmfResponse::FUNCTION_REJECTED.0, 255);
    }
}
