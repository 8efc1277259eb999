//! Turning a finished SCSI command into PDUs: Data-In sequences, residuals
//! and the SCSI Response (RFC 7143 §11.4, §11.7).
//!
//! Pure functions: sequence numbers that belong to the connection (StatSN)
//! and to the session (ExpCmdSN, MaxCmdSN) are left 0 and stamped by the
//! writer task when the PDU is actually sent.

use bytes::Bytes;
use proto::pdu::{DataIn, ScsiResponse};
use proto::scsi::{Asc, Sense, SenseKey};

/// SCSI status GOOD (SAM-5).
pub const STATUS_GOOD: u8 = 0x00;
/// SCSI status CHECK CONDITION (SAM-5).
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

/// Residual of a transfer (RFC 7143 §11.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Residual {
    pub overflow: bool,
    pub underflow: bool,
    pub count: u32,
}

impl Residual {
    /// Compare what the command wanted to move (SPDTL, from the CDB) with what
    /// the initiator expected (EDTL, from the iSCSI header).
    ///
    /// RFC 7143 §11.4.5.1: "the Residual Count ... MUST be set to
    /// EDTL - SPDTL" for underflow and "SPDTL - EDTL" for overflow.
    pub fn compute(edtl: u32, spdtl: u32) -> Residual {
        match spdtl.cmp(&edtl) {
            std::cmp::Ordering::Greater => Residual {
                overflow: true,
                underflow: false,
                count: spdtl - edtl,
            },
            std::cmp::Ordering::Less => Residual {
                overflow: false,
                underflow: true,
                count: edtl - spdtl,
            },
            std::cmp::Ordering::Equal => Residual::default(),
        }
    }
}

/// Everything needed to answer one command.
#[derive(Debug, Clone)]
pub struct Completion {
    pub itt: u32,
    pub lun: u64,
    pub status: u8,
    /// Sense data without the 2-byte SenseLength prefix.
    pub sense: Option<Bytes>,
    /// Data for the initiator (read direction); already at most EDTL long.
    pub data_in: Bytes,
    pub residual: Residual,
}

/// Limits that shape the Data-In stream.
#[derive(Debug, Clone, Copy)]
pub struct DataInLimits {
    /// The initiator's MaxRecvDataSegmentLength: the largest data segment
    /// we may send.
    pub max_send_data_segment_length: u32,
    /// MaxBurstLength: the largest input sequence; ends with the F bit.
    pub max_burst_length: u32,
}

/// One PDU to send for a command completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsePdu {
    DataIn(DataIn),
    Response(ScsiResponse),
}

/// Build the Data-In PDUs and (unless the status rides in the last Data-In)
/// the SCSI Response for a completed command.
///
/// RFC 7143 §11.7.4: the S bit (status in the last Data-In) "MUST only be
/// set if the command did not end with an exception" — here: GOOD status
/// without sense data. Each Data-In data segment is at most the initiator's
/// MaxRecvDataSegmentLength (§13.12) and each input sequence at most
/// MaxBurstLength (§13.13), its last PDU carrying the F bit (§11.7.1).
pub fn build(c: &Completion, limits: DataInLimits) -> Vec<ResponsePdu> {
    let seg = limits.max_send_data_segment_length.max(512) as usize;
    let burst = (limits
        .max_burst_length
        .max(limits.max_send_data_segment_length)
        .max(512)) as usize;
    let collapse = c.status == STATUS_GOOD && c.sense.is_none() && !c.data_in.is_empty();
    let total = c.data_in.len();
    let mut out = Vec::with_capacity(total / seg + 2);
    let mut offset = 0usize;
    let mut data_sn = 0u32;
    let mut burst_used = 0usize;
    while offset < total {
        let len = seg.min(total - offset).min(burst - burst_used);
        let last = offset + len == total;
        burst_used += len;
        let end_of_burst = last || burst_used == burst;
        if end_of_burst {
            burst_used = 0;
        }
        let with_status = last && collapse;
        out.push(ResponsePdu::DataIn(DataIn {
            final_: end_of_burst,
            ack: false,
            overflow: with_status && c.residual.overflow,
            underflow: with_status && c.residual.underflow,
            status: with_status.then_some(c.status),
            lun: c.lun,
            itt: c.itt,
            ttt: 0xffff_ffff,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            data_sn,
            buffer_offset: offset as u32,
            residual_count: if with_status { c.residual.count } else { 0 },
            // Bytes::slice shares the buffer: no copy of the payload.
            data: c.data_in.slice(offset..offset + len),
        }));
        data_sn = data_sn.wrapping_add(1);
        offset += len;
    }
    if !collapse {
        out.push(ResponsePdu::Response(ScsiResponse {
            bidi_overflow: false,
            bidi_underflow: false,
            overflow: c.residual.overflow,
            underflow: c.residual.underflow,
            response: 0,
            status: c.status,
            itt: c.itt,
            snack_tag: 0,
            stat_sn: 0,
            exp_cmd_sn: 0,
            max_cmd_sn: 0,
            // RFC 7143 §11.4.8: the number of Data-In PDUs sent.
            exp_data_sn: data_sn,
            bidi_read_residual_count: 0,
            residual_count: c.residual.count,
            data: c
                .sense
                .as_ref()
                .map(|s| ScsiResponse::sense_segment(s))
                .unwrap_or_default(),
        }));
    }
    out
}

/// Fixed-format sense: ILLEGAL REQUEST, INVALID FIELD IN CDB (SPC-5).
pub fn sense_invalid_field_in_cdb() -> Bytes {
    Bytes::copy_from_slice(
        &Sense::new(SenseKey::ILLEGAL_REQUEST, Asc::INVALID_FIELD_IN_CDB).encode_fixed(),
    )
}

/// Fixed-format sense: ILLEGAL REQUEST, INVALID FIELD IN COMMAND
/// INFORMATION UNIT (0x0E/0x03), used when EDTL is smaller than the
/// command's data-out length (SAM-5 §5.3.4, libiscsi's residual tests).
pub fn sense_invalid_field_in_iu() -> Bytes {
    Bytes::copy_from_slice(
        &Sense::new(
            SenseKey::ILLEGAL_REQUEST,
            Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
        )
        .encode_fixed(),
    )
}

/// Fixed-format sense: ABORTED COMMAND, DATA PHASE ERROR (4Bh/00h), for a
/// write whose Data-Out sequence broke the rules (DataSN, offsets, bursts).
pub fn sense_data_phase_error() -> Bytes {
    Bytes::copy_from_slice(
        &Sense::new(SenseKey::ABORTED_COMMAND, Asc::new(0x4b, 0x00)).encode_fixed(),
    )
}

/// A SCSI Response carrying only a status and optional sense data (no
/// Data-In), e.g. for a command the transport itself fails.
pub fn status_only(itt: u32, status: u8, sense: Option<Bytes>, residual: Residual) -> ScsiResponse {
    let c = Completion {
        itt,
        lun: 0,
        status,
        sense,
        data_in: Bytes::new(),
        residual,
    };
    match build(
        &c,
        DataInLimits {
            max_send_data_segment_length: 8192,
            max_burst_length: 8192,
        },
    )
    .pop()
    {
        Some(ResponsePdu::Response(r)) => r,
        // build() always ends with a Response when there is no data.
        _ => unreachable_response(itt, status),
    }
}

fn unreachable_response(itt: u32, status: u8) -> ScsiResponse {
    ScsiResponse {
        bidi_overflow: false,
        bidi_underflow: false,
        overflow: false,
        underflow: false,
        response: 0,
        status,
        itt,
        snack_tag: 0,
        stat_sn: 0,
        exp_cmd_sn: 0,
        max_cmd_sn: 0,
        exp_data_sn: 0,
        bidi_read_residual_count: 0,
        residual_count: 0,
        data: Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(len: usize, status: u8, sense: Option<Bytes>) -> Completion {
        Completion {
            itt: 7,
            lun: 0,
            status,
            sense,
            data_in: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>()),
            residual: Residual::default(),
        }
    }

    const LIM: DataInLimits = DataInLimits {
        max_send_data_segment_length: 1024,
        max_burst_length: 4096,
    };

    #[test]
    fn residuals() {
        assert_eq!(Residual::compute(512, 512), Residual::default());
        assert_eq!(
            Residual::compute(512, 1024),
            Residual {
                overflow: true,
                underflow: false,
                count: 512
            }
        );
        assert_eq!(
            Residual::compute(1024, 0),
            Residual {
                overflow: false,
                underflow: true,
                count: 1024
            }
        );
    }

    #[test]
    fn phase_collapse_and_segmentation() {
        let c = completion(10_000, STATUS_GOOD, None);
        let pdus = build(&c, LIM);
        assert_eq!(pdus.len(), 10);
        let mut expect_offset = 0;
        for (i, p) in pdus.iter().enumerate() {
            let ResponsePdu::DataIn(d) = p else {
                panic!("expected Data-In only")
            };
            assert_eq!(d.data_sn, i as u32);
            assert_eq!(d.buffer_offset, expect_offset);
            assert!(d.data.len() <= 1024);
            expect_offset += d.data.len() as u32;
            // F at each 4096-byte burst end and at the very end.
            let burst_end = expect_offset % 4096 == 0 || i == 9;
            assert_eq!(d.final_, burst_end, "pdu {i}");
            assert_eq!(d.status.is_some(), i == 9);
        }
        assert_eq!(expect_offset, 10_000);
        let ResponsePdu::DataIn(last) = &pdus[9] else {
            unreachable!()
        };
        assert_eq!(&last.data[..], &c.data_in[9216..]);
    }

    #[test]
    fn sense_forces_a_separate_response() {
        let sense =
            Bytes::from_static(&[0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0]);
        let mut c = completion(0, STATUS_CHECK_CONDITION, Some(sense.clone()));
        c.residual = Residual::compute(512, 0);
        let pdus = build(&c, LIM);
        assert_eq!(pdus.len(), 1);
        let ResponsePdu::Response(r) = &pdus[0] else {
            panic!()
        };
        assert_eq!(r.status, STATUS_CHECK_CONDITION);
        assert_eq!(r.sense().unwrap(), sense);
        assert!(r.underflow && !r.overflow);
        assert_eq!(r.residual_count, 512);
        assert_eq!(r.exp_data_sn, 0);
    }

    #[test]
    fn data_with_check_condition_gets_both() {
        let c = completion(
            100,
            STATUS_CHECK_CONDITION,
            Some(Bytes::from_static(&[0x70; 18])),
        );
        let pdus = build(&c, LIM);
        assert_eq!(pdus.len(), 2);
        let ResponsePdu::DataIn(d) = &pdus[0] else {
            panic!()
        };
        assert!(d.status.is_none() && d.final_);
        let ResponsePdu::Response(r) = &pdus[1] else {
            panic!()
        };
        assert_eq!(r.exp_data_sn, 1);
    }

    #[test]
    fn status_only_response() {
        let r = status_only(9, STATUS_GOOD, None, Residual::compute(0, 512));
        assert_eq!(r.itt, 9);
        assert!(r.overflow);
        assert_eq!(r.residual_count, 512);
        assert!(r.data.is_empty());
    }
}
