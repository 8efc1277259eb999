//! SCSI Command (RFC 7143 §11.3) and SCSI Response (RFC 7143 §11.4),
//! with the Extended CDB and Bidirectional Read Expected Data Transfer Length
//! AHS (RFC 7143 §11.2.2).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::serial::{CmdSn, DataSn, StatSn};

use super::bhs::{open_enum, Bhs, BhsMut, FLAGS};
use super::{Body, Opcode};

// SCSI Command offsets.
const EXPECTED_DATA_TRANSFER_LENGTH: usize = 20;
const CMD_SN: usize = 24;
const EXP_STAT_SN: usize = 28;
const CDB: usize = 32;
/// Length of the CDB field in the BHS.
pub const BHS_CDB_LEN: usize = 16;

const READ_BIT: u8 = 0x40;
const WRITE_BIT: u8 = 0x20;
const ATTR_MASK: u8 = 0x07;

/// AHSType 1, RFC 7143 §11.2.2.3.
const AHS_TYPE_EXTENDED_CDB: u8 = 1;
/// AHSType 2, RFC 7143 §11.2.2.4.
const AHS_TYPE_BIDI_READ_LENGTH: u8 = 2;
/// Longest CDB extension that fits the AHS area next to a bidi AHS.
const MAX_EXTENDED_CDB: usize = 1020 - 8 - 4;
/// AHSLength of the bidirectional read length AHS.
const AHS_BIDI_LENGTH: u16 = 5;

// SCSI Response offsets.
const RESPONSE: usize = 2;
const STATUS: usize = 3;
const SNACK_TAG: usize = 20;
const STAT_SN: usize = 24;
const EXP_CMD_SN: usize = 28;
const MAX_CMD_SN: usize = 32;
const EXP_DATA_SN: usize = 36;
const BIDI_READ_RESIDUAL_COUNT: usize = 40;
const RESIDUAL_COUNT: usize = 44;

const BIDI_OVERFLOW_BIT: u8 = 0x10;
const BIDI_UNDERFLOW_BIT: u8 = 0x08;
const OVERFLOW_BIT: u8 = 0x04;
const UNDERFLOW_BIT: u8 = 0x02;

open_enum! {
    /// Task attributes, RFC 7143 §11.3.1 (3 bits; SAM task attributes).
    pub struct TaskAttr(u8) {
        UNTAGGED = 0,
        SIMPLE = 1,
        ORDERED = 2,
        HEAD_OF_QUEUE = 3,
        ACA = 4,
    }
}

open_enum! {
    /// SCSI Response "Response" field, RFC 7143 §11.4.3.
    pub struct ScsiResponseCode(u8) {
        COMMAND_COMPLETED_AT_TARGET = 0x00,
        TARGET_FAILURE = 0x01,
    }
}

/// SCSI Command, RFC 7143 §11.3:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|I| 0x01      |F|R|W|. .|ATTR | Reserved                      |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| Logical Unit Number (LUN)                                     |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| Expected Data Transfer Length                                 |
///    +---------------+---------------+---------------+---------------+
///  24| CmdSN                                                         |
///    +---------------+---------------+---------------+---------------+
///  28| ExpStatSN                                                     |
///    +---------------+---------------+---------------+---------------+
///  32/ SCSI Command Descriptor Block (CDB)                           /
///   +/                                                               /
///    +---------------+---------------+---------------+---------------+
///  48/ AHS (optional)                                                /
///    +---------------+---------------+---------------+---------------+
///   x/ Header-Digest (optional)                                      /
///    +---------------+---------------+---------------+---------------+
///   y/ (DataSegment, Command Data) (optional)                        /
///    +---------------+---------------+---------------+---------------+
///   z/ Data-Digest (optional)                                        /
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    /// F: no unsolicited Data-Out PDUs follow this PDU.
    pub final_: bool,
    /// R: data will be read from the target.
    pub read: bool,
    /// W: data will be written to the target.
    pub write: bool,
    pub attr: TaskAttr,
    /// Raw 8-byte LUN field, big-endian.
    pub lun: u64,
    pub itt: u32,
    pub expected_data_transfer_length: u32,
    pub cmd_sn: CmdSn,
    pub exp_stat_sn: StatSn,
    /// The CDB: 16 bytes, or longer when carried on with an Extended CDB AHS.
    /// On encode a CDB shorter than 16 bytes is zero-padded to 16.
    pub cdb: Bytes,
    /// Bidirectional Read Expected Data Transfer Length AHS (RFC 7143 §11.2.2.4).
    pub bidi_read_length: Option<u32>,
    /// Immediate (unsolicited) data.
    pub data: Bytes,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl Body for ScsiCommand {
    const OPCODE: Opcode = Opcode::SCSI_COMMAND;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Self::decode_with_ahs(h, &[], data)
    }

    fn decode_with_ahs(h: Bhs<'_>, mut ahs: &[u8], data: Bytes) -> Result<Self, &'static str> {
        let flags = h.u8(FLAGS);
        let mut cdb = BytesMut::from(&h.0[CDB..CDB + BHS_CDB_LEN]);
        let mut bidi_read_length = None;
        let mut seen_ext_cdb = false;
        // RFC 7143 §11.2.2: each AHS is AHSLength(2) AHSType(1) then
        // AHSLength bytes of AHS-specific data, padded to 4 bytes.
        while !ahs.is_empty() {
            if ahs.len() < 4 {
                return Err("AHS shorter than its 4-byte header");
            }
            let len = usize::from(ahs.get_u16());
            let ahs_type = ahs.get_u8() & 0x3f;
            if len == 0 {
                return Err("AHS with zero AHSLength");
            }
            // `len` counts the AHS-specific byte already under the cursor.
            let padded = pad4(3 + len) - 3;
            if padded > ahs.len() {
                return Err("AHSLength exceeds TotalAHSLength");
            }
            let body = &ahs[1..len];
            match ahs_type {
                AHS_TYPE_EXTENDED_CDB if !seen_ext_cdb => {
                    seen_ext_cdb = true;
                    cdb.extend_from_slice(body);
                }
                AHS_TYPE_BIDI_READ_LENGTH if bidi_read_length.is_none() => {
                    if len != usize::from(AHS_BIDI_LENGTH) {
                        return Err("bidirectional read length AHS has wrong AHSLength");
                    }
                    let mut b = body;
                    bidi_read_length = Some(b.get_u32());
                }
                AHS_TYPE_EXTENDED_CDB | AHS_TYPE_BIDI_READ_LENGTH => {
                    return Err("duplicate AHS");
                }
                _ => return Err("unsupported AHS type"),
            }
            ahs.advance(padded);
        }
        Ok(ScsiCommand {
            immediate: h.immediate(),
            final_: h.final_bit(),
            read: flags & READ_BIT != 0,
            write: flags & WRITE_BIT != 0,
            attr: TaskAttr(flags & ATTR_MASK),
            lun: h.lun(),
            itt: h.itt(),
            expected_data_transfer_length: h.u32(EXPECTED_DATA_TRANSFER_LENGTH),
            cmd_sn: h.sn(CMD_SN),
            exp_stat_sn: h.sn(EXP_STAT_SN),
            cdb: cdb.freeze(),
            bidi_read_length,
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_immediate(self.immediate);
        b.set_final(self.final_);
        b.set_flag(FLAGS, READ_BIT, self.read);
        b.set_flag(FLAGS, WRITE_BIT, self.write);
        b.0[FLAGS] |= self.attr.0 & ATTR_MASK;
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32(
            EXPECTED_DATA_TRANSFER_LENGTH,
            self.expected_data_transfer_length,
        );
        b.set_sn(CMD_SN, self.cmd_sn);
        b.set_sn(EXP_STAT_SN, self.exp_stat_sn);
        let n = self.cdb.len().min(BHS_CDB_LEN);
        b.0[CDB..CDB + n].copy_from_slice(&self.cdb[..n]);
    }

    fn encode_ahs(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        // RFC 7143 §11.2.2.3: the Extended CDB AHS comes first when both are present.
        if self.cdb.len() > BHS_CDB_LEN {
            let ext = &self.cdb[BHS_CDB_LEN..];
            // AHSLength = CDBLength - 15 (the reserved byte plus the extra CDB bytes).
            // TotalAHSLength is one byte of 4-byte words (1020 bytes), so the
            // extension is capped (encoding is infallible; real CDBs are <= 260).
            let ext = &ext[..ext.len().min(MAX_EXTENDED_CDB)];
            out.put_u16((ext.len() + 1) as u16);
            out.put_u8(AHS_TYPE_EXTENDED_CDB);
            out.put_u8(0);
            out.put_slice(ext);
            let pad = pad4(4 + ext.len()) - (4 + ext.len());
            out.put_bytes(0, pad);
        }
        if let Some(len) = self.bidi_read_length {
            out.put_u16(AHS_BIDI_LENGTH);
            out.put_u8(AHS_TYPE_BIDI_READ_LENGTH);
            out.put_u8(0);
            out.put_u32(len);
        }
        out.len() - start
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

/// SCSI Response, RFC 7143 §11.4:
///
/// ```text
/// Byte/     0       |       1       |       2       |       3       |
///    +---------------+---------------+---------------+---------------+
///   0|.|.| 0x21      |1|. .|o|u|O|U|.| Response      | Status        |
///    +---------------+---------------+---------------+---------------+
///   4|TotalAHSLength | DataSegmentLength                             |
///    +---------------+---------------+---------------+---------------+
///   8| Reserved                                                      |
///    +                                                               +
///  12|                                                               |
///    +---------------+---------------+---------------+---------------+
///  16| Initiator Task Tag                                            |
///    +---------------+---------------+---------------+---------------+
///  20| SNACK Tag or Reserved                                         |
///    +---------------+---------------+---------------+---------------+
///  24| StatSN                                                        |
///    +---------------+---------------+---------------+---------------+
///  28| ExpCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  32| MaxCmdSN                                                      |
///    +---------------+---------------+---------------+---------------+
///  36| ExpDataSN or Reserved                                         |
///    +---------------+---------------+---------------+---------------+
///  40| Bidirectional Read Residual Count or Reserved                 |
///    +---------------+---------------+---------------+---------------+
///  44| Residual Count or Reserved                                    |
///    +---------------+---------------+---------------+---------------+
///  48| Header-Digest (optional)                                      |
///    +---------------+---------------+---------------+---------------+
///    / Data Segment (optional)                                       /
///    +---------------+---------------+---------------+---------------+
///    | Data-Digest (optional)                                        |
/// ```
///
/// The data segment holds SenseLength (2 bytes) + Sense Data + Response
/// Data (RFC 7143 §11.4.7); see [`ScsiResponse::sense`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScsiResponse {
    /// o: bidirectional read residual overflow.
    pub bidi_overflow: bool,
    /// u: bidirectional read residual underflow.
    pub bidi_underflow: bool,
    /// O: residual overflow.
    pub overflow: bool,
    /// U: residual underflow.
    pub underflow: bool,
    /// iSCSI service response; see [`ScsiResponseCode`].
    pub response: u8,
    /// SCSI status (SAM), valid when `response` is 0.
    pub status: u8,
    pub itt: u32,
    pub snack_tag: u32,
    pub stat_sn: StatSn,
    pub exp_cmd_sn: CmdSn,
    pub max_cmd_sn: CmdSn,
    pub exp_data_sn: DataSn,
    pub bidi_read_residual_count: u32,
    pub residual_count: u32,
    /// SenseLength + sense data, or response data; empty for plain GOOD.
    pub data: Bytes,
}

impl ScsiResponse {
    /// The sense data of the data segment (RFC 7143 §11.4.7.2): the bytes after
    /// the 2-byte SenseLength, bounded by it. `None` when the segment is empty
    /// or SenseLength exceeds the segment.
    pub fn sense(&self) -> Option<Bytes> {
        if self.data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([self.data[0], self.data[1]]));
        if 2 + len > self.data.len() {
            return None;
        }
        Some(self.data.slice(2..2 + len))
    }

    /// Builds the data segment from sense data: SenseLength + sense bytes.
    pub fn sense_segment(sense: &[u8]) -> Bytes {
        let len = sense.len().min(usize::from(u16::MAX));
        let mut b = BytesMut::with_capacity(2 + len);
        b.put_u16(len as u16);
        b.put_slice(&sense[..len]);
        b.freeze()
    }
}

impl Body for ScsiResponse {
    const OPCODE: Opcode = Opcode::SCSI_RESPONSE;

    fn decode_body(h: Bhs<'_>, data: Bytes) -> Result<Self, &'static str> {
        Ok(ScsiResponse {
            bidi_overflow: h.flag(FLAGS, BIDI_OVERFLOW_BIT),
            bidi_underflow: h.flag(FLAGS, BIDI_UNDERFLOW_BIT),
            overflow: h.flag(FLAGS, OVERFLOW_BIT),
            underflow: h.flag(FLAGS, UNDERFLOW_BIT),
            response: h.u8(RESPONSE),
            status: h.u8(STATUS),
            itt: h.itt(),
            snack_tag: h.u32(SNACK_TAG),
            stat_sn: h.sn(STAT_SN),
            exp_cmd_sn: h.sn(EXP_CMD_SN),
            max_cmd_sn: h.sn(MAX_CMD_SN),
            exp_data_sn: h.sn(EXP_DATA_SN),
            bidi_read_residual_count: h.u32(BIDI_READ_RESIDUAL_COUNT),
            residual_count: h.u32(RESIDUAL_COUNT),
            data,
        })
    }

    fn encode_bhs(&self, b: &mut BhsMut) {
        b.set_final(true);
        b.set_flag(FLAGS, BIDI_OVERFLOW_BIT, self.bidi_overflow);
        b.set_flag(FLAGS, BIDI_UNDERFLOW_BIT, self.bidi_underflow);
        b.set_flag(FLAGS, OVERFLOW_BIT, self.overflow);
        b.set_flag(FLAGS, UNDERFLOW_BIT, self.underflow);
        b.set_u8(RESPONSE, self.response);
        b.set_u8(STATUS, self.status);
        b.set_itt(self.itt);
        b.set_u32(SNACK_TAG, self.snack_tag);
        b.set_sn(STAT_SN, self.stat_sn);
        b.set_sn(EXP_CMD_SN, self.exp_cmd_sn);
        b.set_sn(MAX_CMD_SN, self.max_cmd_sn);
        b.set_sn(EXP_DATA_SN, self.exp_data_sn);
        b.set_u32(BIDI_READ_RESIDUAL_COUNT, self.bidi_read_residual_count);
        b.set_u32(RESIDUAL_COUNT, self.residual_count);
    }

    fn data(&self) -> &Bytes {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{check_fixture, hx};
    use super::super::{DecodeError, DigestConfig, Pdu};
    use super::*;

    fn read10() -> ScsiCommand {
        ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: TaskAttr::SIMPLE,
            lun: 0,
            itt: 0x1400_0000,
            expected_data_transfer_length: 0x400,
            cmd_sn: CmdSn::new(0x14),
            exp_stat_sn: StatSn::new(0x18),
            cdb: Bytes::from_static(&[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]),
            bidi_read_length: None,
            data: Bytes::new(),
        }
    }

    #[test]
    fn rfc3720_read10_example() {
        // The SCSI Read (10) PDU of RFC 3720 Appendix B.4, with its digest.
        let fixture = [
            "01 c1 00 00", // opcode 1, F R, ATTR simple
            "00 00 00 00",
            "00 00 00 00 00 00 00 00",
            "14 00 00 00",                                     // ITT
            "00 00 04 00",                                     // Expected Data Transfer Length
            "00 00 00 14",                                     // CmdSN
            "00 00 00 18",                                     // ExpStatSN
            "28 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00", // READ(10), 2 blocks
        ];
        check_fixture(&fixture, Pdu::ScsiCommand(read10()));
        // RFC's PDU has ATTR 0 (untagged); its CRC is 56 3a 96 d9.
        let mut cmd = read10();
        cmd.attr = TaskAttr::UNTAGGED;
        let enc = Pdu::ScsiCommand(cmd).encode(DigestConfig::BOTH);
        assert_eq!(&enc.header[48..], &[0x56, 0x3a, 0x96, 0xd9]);
    }

    #[test]
    fn write_with_immediate_data() {
        check_fixture(
            &[
                "41 a2 00 00", // I, opcode 1, F W, ATTR ordered
                "00 00 00 06",
                "00 02 00 00 00 00 00 00",
                "00 00 00 20",
                "00 00 02 00",
                "00 00 00 09",
                "00 00 00 04",
                "2a 00 00 00 00 10 00 00 01 00 00 00 00 00 00 00",
                "01 02 03 04 05 06 00 00",
            ],
            Pdu::ScsiCommand(ScsiCommand {
                immediate: true,
                final_: true,
                read: false,
                write: true,
                attr: TaskAttr::ORDERED,
                lun: 0x0002_0000_0000_0000,
                itt: 0x20,
                expected_data_transfer_length: 0x200,
                cmd_sn: CmdSn::new(9),
                exp_stat_sn: StatSn::new(4),
                cdb: Bytes::from_static(&[0x2a, 0, 0, 0, 0, 0x10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
                bidi_read_length: None,
                data: Bytes::from_static(&[1, 2, 3, 4, 5, 6]),
            }),
        );
    }

    #[test]
    fn extended_cdb_and_bidi_ahs() {
        // A 32-byte CDB: 16 in the BHS, 16 in an Extended CDB AHS
        // (AHSLength 17 = CDBLength - 15, padded to 20 bytes), then the
        // bidirectional read length AHS (AHSLength 5, 8 bytes).
        let cdb: Vec<u8> = (0u8..32).collect();
        check_fixture(
            &[
                "01 e1 00 00", // F R W, simple
                "07 00 00 00", // TotalAHSLength 7 words = 28 bytes
                "00 00 00 00 00 00 00 00",
                "00 00 00 30",
                "00 00 10 00",
                "00 00 00 01",
                "00 00 00 01",
                "00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f",
                "00 11 01 00", // AHSLength 17, type 1, reserved
                "10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f",
                "00 05 02 00", // AHSLength 5, type 2, reserved
                "00 00 20 00", // bidi read expected length 8192
            ],
            Pdu::ScsiCommand(ScsiCommand {
                immediate: false,
                final_: true,
                read: true,
                write: true,
                attr: TaskAttr::SIMPLE,
                lun: 0,
                itt: 0x30,
                expected_data_transfer_length: 0x1000,
                cmd_sn: CmdSn::new(1),
                exp_stat_sn: StatSn::new(1),
                cdb: Bytes::from(cdb),
                bidi_read_length: Some(0x2000),
                data: Bytes::new(),
            }),
        );
    }

    #[test]
    fn odd_extended_cdb_is_padded() {
        let mut cmd = read10();
        cmd.cdb = Bytes::from(vec![0xaa; 18]);
        let enc = Pdu::ScsiCommand(cmd.clone()).encode(DigestConfig::NONE);
        // AHS: 4-byte header + 2 CDB bytes + 2 pad = 8 bytes.
        assert_eq!(enc.header[4], 2);
        assert_eq!(
            &enc.header[48..56],
            &[0x00, 0x03, 0x01, 0x00, 0xaa, 0xaa, 0, 0]
        );
        let back = Pdu::decode(enc.to_bytes(), DigestConfig::NONE).unwrap();
        assert_eq!(back, Pdu::ScsiCommand(cmd));
    }

    #[test]
    fn short_cdb_is_zero_padded() {
        let mut cmd = read10();
        cmd.cdb = Bytes::from_static(&[0x00, 0, 0, 0, 0, 0]); // TEST UNIT READY, 6 bytes
        let enc = Pdu::ScsiCommand(cmd).encode(DigestConfig::NONE);
        assert_eq!(&enc.header[32..48], &[0u8; 16]);
    }

    #[test]
    fn bad_ahs_is_malformed() {
        let base = [
            "01 81 00 00",
            "01 00 00 00",
            "00 00 00 00 00 00 00 00",
            "00 00 00 01",
            "00 00 00 00",
            "00 00 00 01",
            "00 00 00 01",
            "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00",
        ];
        for (ahs, why) in [
            ("00 00 01 00", "zero AHSLength"),
            ("00 09 01 00", "AHSLength past TotalAHSLength"),
            ("00 01 07 00", "unknown AHS type"),
            ("00 03 02 00", "bidi AHS of wrong length"),
        ] {
            let mut parts = base.to_vec();
            parts.push(ahs);
            let err = Pdu::decode(hx(&parts), DigestConfig::NONE).unwrap_err();
            assert!(
                matches!(err, DecodeError::Malformed { .. }),
                "{why}: {err:?}"
            );
            assert!(!err.is_fatal());
        }
    }

    #[test]
    fn scsi_response_with_sense() {
        // CHECK CONDITION with 18 bytes of fixed sense data (ILLEGAL REQUEST).
        let sense = [
            0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0,
        ];
        let seg = ScsiResponse::sense_segment(&sense);
        assert_eq!(seg.len(), 20);
        let rsp = ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow: false,
            underflow: true,
            response: 0,
            status: 0x02,
            itt: 0x14,
            snack_tag: 0,
            stat_sn: StatSn::new(0x18),
            exp_cmd_sn: CmdSn::new(0x15),
            max_cmd_sn: CmdSn::new(0x34),
            exp_data_sn: DataSn::new(0),
            bidi_read_residual_count: 0,
            residual_count: 0x400,
            data: seg,
        };
        assert_eq!(rsp.sense().as_deref(), Some(&sense[..]));
        check_fixture(
            &[
                "21 82 00 02", // F, U; response 0; status CHECK CONDITION
                "00 00 00 14", // DataSegmentLength 20
                "00 00 00 00 00 00 00 00",
                "00 00 00 14",
                "00 00 00 00", // SNACK tag
                "00 00 00 18",
                "00 00 00 15",
                "00 00 00 34",
                "00 00 00 00", // ExpDataSN
                "00 00 00 00", // bidi residual
                "00 00 04 00", // residual count
                "00 12",       // SenseLength 18
                "70 00 05 00 00 00 00 0a 00 00 00 00 24 00 00 00 00 00",
            ],
            Pdu::ScsiResponse(rsp),
        );
    }

    #[test]
    fn scsi_response_flags() {
        let wire = hx(&[
            "21 9e 01 00", // o u O U, response TARGET FAILURE
            "00 00 00 00",
            "00 00 00 00 00 00 00 00",
            "00 00 00 01",
            "00 00 00 00",
            "00 00 00 01",
            "00 00 00 01",
            "00 00 00 01",
            "00 00 00 00",
            "00 00 00 10",
            "00 00 00 20",
        ]);
        let Pdu::ScsiResponse(r) = Pdu::decode(wire, DigestConfig::NONE).unwrap() else {
            panic!()
        };
        assert!(r.bidi_overflow && r.bidi_underflow && r.overflow && r.underflow);
        assert_eq!(
            ScsiResponseCode(r.response),
            ScsiResponseCode::TARGET_FAILURE
        );
        assert_eq!((r.bidi_read_residual_count, r.residual_count), (0x10, 0x20));
        assert_eq!(r.sense(), None);
    }

    #[test]
    fn sense_length_beyond_segment() {
        let mut r = match Pdu::decode(
            hx(&[
                "21 80 00 02",
                "00 00 00 04",
                "00000000 00000000",
                "00 00 00 01",
                "00000000 00000001 00000001 00000001 00000000 00000000 00000000",
                "00 09 70 00",
            ]),
            DigestConfig::NONE,
        ) {
            Ok(Pdu::ScsiResponse(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(r.sense(), None, "SenseLength 9 exceeds the 4-byte segment");
        r.data = Bytes::new();
        assert_eq!(r.sense(), None);
    }

    #[test]
    fn task_attr_unknown_round_trips() {
        let mut cmd = read10();
        cmd.attr = TaskAttr(7);
        assert!(!cmd.attr.is_known());
        let p = Pdu::ScsiCommand(cmd);
        let back = Pdu::decode(p.encode(DigestConfig::NONE).to_bytes(), DigestConfig::NONE);
        assert_eq!(back, Ok(p));
    }
}
