//! SNACK Request (RFC 7143 §11.16).

use bytes::Bytes;

use crate::serial::{SerialNumber, StatSn};

use super::bhs::{open_enum, Bhs, BhsMut, FLAGS};
use super::{Body, Opcode};

const TYPE_MASK: u8 = 0x0f;
const TTT_OR_SNACK_TAG: usize = 20;
const EXP_STAT_SN: usize = 28;
const BEG_RUN: usize = 40;
const RUN_LENGTH: usize = 44;

open_enum! {
    /// SNACK types, RFC 7143 §11.16.1.
    pub struct SnackType(u8) {
        DATA_R2T = 0,
        STATUS = 1,
        DATA_ACK = 2,
        R_DATA = 3,
    }
}

/// SNACK Request, RFC 7143 §11.16:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x10      |1|.|.|.| Type  | Reserved                      |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| LUN or Reserved                                               |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag or 0xffffffff                              |
///    +---------------+---------------+---------------+---------------+
///  20| Target Transfer Tag or SNACK Tag or 0xffffffff                |
///    +---------------+---------------+---------------+---------------+
///  24| Reserved                                                      |
///    +---------------+---------------+---------------+---------------+
///  28| ExpStatSN                                                     |
///    +---------------+---------------+---------------+---------------+
///  32/ Reserved                                                      /
///    +---------------+---------------+---------------+---------------+
///  40| BegRun                                                        |
///    +---------------------------------------------------------------+
///  44| RunLength                                                     |
///    +---------------------------------------------------------------+
///  48| Header-Digest (optional)                                      |
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnackRequest {
    pub snack_type: SnackType,
    pub lun: u64,
    pub itt: u32,
    /// Target Transfer Tag (DataACK) or SNACK Tag (R-Data) or 0xffffffff.
    pub ttt: u32,
    pub exp_stat_sn: StatSn,
    pub beg_run: SerialNumber,
    pub run_length: u32,
    /// RFC 7143 §11.16: no data segment is defined; kept for faithful decoding.
    pub data: Bytes,
}

impl Body for SnackRequest {
    const OPCODE: Opcode = Opcode::SNACK_REQUEST;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(SnackRequest {
            snack_type: SnackType(h.u8(FLAGS) & TYPE_MASK),
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32(TTT_OR_SNACK_TAG),
            exp_stat_sn: h.sn(EXP_STAT_SN),
            beg_run: h.sn(BEG_RUN),
            run_length: h.u32(RUN_LENGTH),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_u8(FLAGS, 0x80 | (self.snack_type.0 & TYPE_MASK));
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32(TTT_OR_SNACK_TAG, self.ttt);
        b.set_sn(EXP_STAT_SN, self.exp_stat_sn);
        b.set_sn(BEG_RUN, self.beg_run);
        b.set_u32(RUN_LENGTH, self.run_length);
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
    fn data_ack_snack_fixture() {
        check_fixture(
            &[
                "10 82 00 00", // opcode 0x10, type 2 DataACK
                "00 00 00 00",
                "00 01 00 00 00 00 00 00",
                "ff ff ff ff",
                "00 00 10 01", // TTT of the acknowledged Data-In
                "00 00 00 00",
                "00 00 00 08",
                "00000000 00000000",
                "00 00 00 04", // BegRun
                "00 00 00 00", // RunLength
            ],
            Pdu::SnackRequest(SnackRequest {
                snack_type: SnackType::DATA_ACK,
                lun: 0x0001_0000_0000_0000,
                itt: 0xffff_ffff,
                ttt: 0x1001,
                exp_stat_sn: StatSn::new(8),
                beg_run: SerialNumber::new(4),
                run_length: 0,
                data: Bytes::new(),
            }),
        );
    }
}
