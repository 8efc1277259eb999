//! SCSI Data-Out and SCSI Data-In (RFC 7143 §11.7) and Ready To Transfer
//! (R2T, RFC 7143 §11.8).

use bytes::Bytes;

use crate::serial::{CmdSn, DataSn, R2tSn, StatSn};

use super::bhs::{Bhs, BhsMut, FLAGS};
use super::{Body, Opcode};

const TTT: usize = 20;
// Data-Out
const DO_EXP_STAT_SN: usize = 28;
const DATA_SN: usize = 36;
const BUFFER_OFFSET: usize = 40;
// Data-In and R2T
const STAT_SN: usize = 24;
const EXP_CMD_SN: usize = 28;
const MAX_CMD_SN: usize = 32;
const STATUS: usize = 3;
const RESIDUAL_COUNT: usize = 44;
/// R2TSN sits where DataSN is in Data-In.
const R2T_SN: usize = 36;
const DESIRED_DATA_TRANSFER_LENGTH: usize = 44;

const ACK_BIT: u8 = 0x40;
const OVERFLOW_BIT: u8 = 0x04;
const UNDERFLOW_BIT: u8 = 0x02;
const STATUS_BIT: u8 = 0x01;

/// SCSI Data-Out, RFC 7143 §11.7.1:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x05      |F| Reserved                                    |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| LUN or Reserved                                               |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| Target Transfer Tag or 0xffffffff                             |
///    +---------------+---------------+---------------+---------------+
///  24| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  28| ExpStatSN                                                     |
///    +---------------+---------------+---------------+---------------+
///  32| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  36| DataSN                                                        |
///    +---------------+---------------+---------------+---------------+
///  40| Buffer Offset                                                 |
///    +---------------+---------------+---------------+---------------+
///  44| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional) / DataSegment / Data-Digest          /
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOut {
    pub final_: bool,
    pub lun: u64,
    pub itt: u32,
    /// 0xffffffff for unsolicited data, else the R2T's TTT.
    pub ttt: u32,
    pub exp_stat_sn: StatSn,
    pub data_sn: DataSn,
    pub buffer_offset: u32,
    pub data: Bytes,
}

impl Body for DataOut {
    const OPCODE: Opcode = Opcode::DATA_OUT;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(DataOut {
            final_: h.final_bit(),
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32(TTT),
            exp_stat_sn: h.sn(DO_EXP_STAT_SN),
            data_sn: h.sn(DATA_SN),
            buffer_offset: h.u32(BUFFER_OFFSET),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_final(self.final_);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32(TTT, self.ttt);
        b.set_sn(DO_EXP_STAT_SN, self.exp_stat_sn);
        b.set_sn(DATA_SN, self.data_sn);
        b.set_u32(BUFFER_OFFSET, self.buffer_offset);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

/// SCSI Data-In, RFC 7143 §11.7.1:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x25      |F|A|0 0 0|O|U|S| Reserved      |Status or Rsvd |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| LUN or Reserved                                               |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| Target Transfer Tag or 0xffffffff                             |
///    +---------------+---------------+---------------+---------------+
///  24| StatSN or Reserved                                            |
///    +---------------+---------------+---------------+---------------+
///  28| ExpCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  32| MaxCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  36| DataSN                                                        |
///    +---------------+---------------+---------------+---------------+
///  40| Buffer Offset                                                 |
///    +---------------+---------------+---------------+---------------+
///  44| Residual Count                                                |
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional) / DataSegment / Data-Digest          /
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataIn {
    pub final_: bool,
    /// A: the target asks for a DataACK SNACK (ErrorRecoveryLevel >= 1).
    pub ack: bool,
    /// O: residual overflow (only with S).
    pub overflow: bool,
    /// U: residual underflow (only with S).
    pub underflow: bool,
    /// S bit set: the PDU carries the command's SCSI status (phase collapse).
    pub status: Option<u8>,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub data_sn: DataSn,
    pub buffer_offset: u32,
    pub residual_count: u32,
    pub data: Bytes,
}

impl Body for DataIn {
    const OPCODE: Opcode = Opcode::DATA_IN;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(DataIn {
            final_: h.final_bit(),
            ack: h.flag(FLAGS, ACK_BIT),
            overflow: h.flag(FLAGS, OVERFLOW_BIT),
            underflow: h.flag(FLAGS, UNDERFLOW_BIT),
            status: h.flag(FLAGS, STATUS_BIT).then(|| h.u8(STATUS)),
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32(TTT),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
            data_sn: h.sn(DATA_SN),
            buffer_offset: h.u32(BUFFER_OFFSET),
            residual_count: h.u32(RESIDUAL_COUNT),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_final(self.final_);
        b.set_flag(FLAGS, ACK_BIT, self.ack);
        b.set_flag(FLAGS, OVERFLOW_BIT, self.overflow);
        b.set_flag(FLAGS, UNDERFLOW_BIT, self.underflow);
        if let Some(status) = self.status {
            b.set_flag(FLAGS, STATUS_BIT, true);
            b.set_u8(STATUS, status);
        }
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32(TTT, self.ttt);
        b.set_sn(STAT_SN, self.stat_sn);
        b.set_sn(EXP_CMD_SN, self.exp_cmd_sn);
        b.set_sn(MAX_CMD_SN, self.max_cmd_sn);
        b.set_sn(DATA_SN, self.data_sn);
        b.set_u32(BUFFER_OFFSET, self.buffer_offset);
        b.set_u32(RESIDUAL_COUNT, self.residual_count);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

/// Ready To Transfer (R2T), RFC 7143 §11.8:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x31      |1| Reserved                                    |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| LUN                                                           |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| Target Transfer Tag                                           |
///    +---------------+---------------+---------------+---------------+
///  24| StatSN                                                        |
///    +---------------+---------------+---------------+---------------+
///  28| ExpCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  32| MaxCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  36| R2TSN                                                         |
///    +---------------+---------------+---------------+---------------+
///  40| Buffer Offset                                                 |
///    +---------------+---------------+---------------+---------------+
///  44| Desired Data Transfer Length                                  |
///    +---------------------------------------------------------------+
///  48| Header-Digest (optional)                                      |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub r2t_sn: R2tSn,
    pub buffer_offset: u32,
    pub desired_data_transfer_length: u32,
    /// RFC 7143 §11.8: DataSegmentLength is 0; kept for faithful decoding.
    pub data: Bytes,
}

impl Body for R2t {
    const OPCODE: Opcode = Opcode::R2T;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(R2t {
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32(TTT),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
            r2t_sn: h.sn(R2T_SN),
            buffer_offset: h.u32(BUFFER_OFFSET),
            desired_data_transfer_length: h.u32(DESIRED_DATA_TRANSFER_LENGTH),
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
        b.set_sn(R2T_SN, self.r2t_sn);
        b.set_u32(BUFFER_OFFSET, self.buffer_offset);
        b.set_u32(
            DESIRED_DATA_TRANSFER_LENGTH,
            self.desired_data_transfer_length,
        );
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
    fn data_out_fixture() {
        check_fixture(
            &[
                "05 80 00 00", // opcode 5, F
                "00 00 00 03",
                "00 01 00 00 00 00 00 00",
                "00 00 00 21", // ITT
                "00 00 10 01", // TTT from the R2T
                "00 00 00 00",
                "00 00 00 09", // ExpStatSN
                "00 00 00 00",
                "00 00 00 02", // DataSN
                "00 00 20 00", // Buffer Offset
                "00 00 00 00",
                "aa bb cc 00",
            ],
            Pdu::DataOut(DataOut {
                final_: true,
                lun: 0x0001_0000_0000_0000,
                itt: 0x21,
                ttt: 0x1001,
                exp_stat_sn: StatSn::new(9),
                data_sn: DataSn::new(2),
                buffer_offset: 0x2000,
                data: Bytes::from_static(&[0xaa, 0xbb, 0xcc]),
            }),
        );
    }

    #[test]
    fn data_in_with_status_fixture() {
        check_fixture(
            &[
                "25 83 00 00", // F, U, S; status GOOD
                "00 00 00 08",
                "00 00 00 00 00 00 00 00",
                "00 00 00 22",
                "ff ff ff ff",
                "00 00 00 0c", // StatSN
                "00 00 00 0d",
                "00 00 00 2c",
                "00 00 00 00", // DataSN
                "00 00 00 00", // Buffer Offset
                "00 00 01 f8", // Residual Count 504
                "00 00 00 00 00 00 1f ff",
            ],
            Pdu::DataIn(DataIn {
                final_: true,
                ack: false,
                overflow: false,
                underflow: true,
                status: Some(0),
                lun: 0,
                itt: 0x22,
                ttt: 0xffff_ffff,
                stat_sn: StatSn::new(0xc),
                exp_cmd_sn: CmdSn::new(0xd),
                max_cmd_sn: CmdSn::new(0x2c),
                data_sn: DataSn::new(0),
                buffer_offset: 0,
                residual_count: 504,
                data: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0x1f, 0xff]),
            }),
        );
    }

    #[test]
    fn data_in_without_status_ignores_status_byte() {
        // S clear: byte 3 is reserved and StatSN is not meaningful.
        let wire = hx(&[
            "25 40 00 05", // A set, S clear, junk in the reserved status byte
            "00 00 00 00",
            "00 00 00 00 00 00 00 00",
            "00 00 00 22",
            "00 00 00 99",
            "00 00 00 00",
            "00 00 00 0d",
            "00 00 00 2c",
            "00 00 00 01",
            "00 00 10 00",
            "00 00 00 00",
        ]);
        let pdu = Pdu::decode(wire, DigestConfig::NONE).unwrap();
        let Pdu::DataIn(d) = &pdu else { panic!() };
        assert_eq!(d.status, None);
        assert!(d.ack && !d.final_);
        assert_eq!(pdu.stat_sn(), None);
        assert_eq!(pdu.encode(DigestConfig::NONE).header[3], 0);
    }

    #[test]
    fn r2t_fixture() {
        check_fixture(
            &[
                "31 80 00 00",
                "00 00 00 00",
                "00 01 00 00 00 00 00 00",
                "00 00 00 21",
                "00 00 10 01", // TTT
                "00 00 00 09", // StatSN
                "00 00 00 0a",
                "00 00 00 29",
                "00 00 00 00", // R2TSN
                "00 00 20 00", // Buffer Offset
                "00 01 00 00", // Desired Data Transfer Length 65536
            ],
            Pdu::R2t(R2t {
                lun: 0x0001_0000_0000_0000,
                itt: 0x21,
                ttt: 0x1001,
                stat_sn: StatSn::new(9),
                exp_cmd_sn: CmdSn::new(10),
                max_cmd_sn: CmdSn::new(0x29),
                r2t_sn: R2tSn::new(0),
                buffer_offset: 0x2000,
                desired_data_transfer_length: 0x10000,
                data: Bytes::new(),
            }),
        );
    }
}
