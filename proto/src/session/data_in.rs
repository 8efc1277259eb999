//! Answering a finished SCSI command: Data-In sequences, residuals and the
//! SCSI Response (RFC 7143 §11.4, §11.7).
//!
//! Target side: [`build`] is pure: StatSN (per connection) and
//! ExpCmdSN/MaxCmdSN (per session) are left 0 and stamped when the PDU is
//! actually sent ([`crate::session::stamp::stamp_target`]).
//!
//! Initiator side: [`ReadProgress`] checks each arriving Data-In (DataSN
//! order, S only with F, offsets within the expected length) and that the
//! data has no holes when the status arrives.

use std::ops::Range;

use bytes::Bytes;
use thiserror::Error;

use crate::pdu::{DataIn, Pdu, ScsiResponse, RESERVED_TAG};
use crate::scsi::Status;
use crate::serial::{CmdSn, DataSn, StatSn};

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
    pub status: Status,
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

/// The Data-In PDUs and (unless the status rides in the last Data-In) the
/// SCSI Response for a completed command.
///
/// RFC 7143 §11.7.4: the S bit (status in the last Data-In) "MUST only be
/// set if the command did not end with an exception" — here: GOOD status
/// without sense data. Each Data-In data segment is at most the initiator's
/// MaxRecvDataSegmentLength (§13.12) and each input sequence at most
/// MaxBurstLength (§13.13), its last PDU carrying the F bit (§11.7.1).
/// The payloads are `Bytes` slices of `c.data_in`: nothing is copied.
pub fn build(c: &Completion, limits: DataInLimits) -> Vec<Pdu> {
    let seg = limits.max_send_data_segment_length.max(512) as usize;
    let burst = (limits
        .max_burst_length
        .max(limits.max_send_data_segment_length)
        .max(512)) as usize;
    let collapse = c.status == Status::GOOD && c.sense.is_none() && !c.data_in.is_empty();
    let total = c.data_in.len();
    let mut out = Vec::with_capacity(total / seg + 2);
    let mut offset = 0usize;
    let mut data_sn = DataSn::new(0);
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
        out.push(Pdu::DataIn(DataIn {
            final_: end_of_burst,
            ack: false,
            overflow: with_status && c.residual.overflow,
            underflow: with_status && c.residual.underflow,
            status: with_status.then_some(c.status.0),
            lun: c.lun,
            itt: c.itt,
            ttt: RESERVED_TAG,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            data_sn,
            buffer_offset: offset as u32,
            residual_count: if with_status { c.residual.count } else { 0 },
            data: c.data_in.slice(offset..offset + len),
        }));
        data_sn = data_sn.successor();
        offset += len;
    }
    if !collapse {
        out.push(Pdu::ScsiResponse(response(c, data_sn)));
    }
    out
}

fn response(c: &Completion, data_in_pdus: DataSn) -> ScsiResponse {
    ScsiResponse {
        bidi_overflow: false,
        bidi_underflow: false,
        overflow: c.residual.overflow,
        underflow: c.residual.underflow,
        response: 0,
        status: c.status.0,
        itt: c.itt,
        snack_tag: 0,
        stat_sn: StatSn::new(0),
        exp_cmd_sn: CmdSn::new(0),
        max_cmd_sn: CmdSn::new(0),
        // RFC 7143 §11.4.8: the number of Data-In PDUs sent.
        exp_data_sn: data_in_pdus,
        bidi_read_residual_count: 0,
        residual_count: c.residual.count,
        data: c
            .sense
            .as_ref()
            .map(|s| ScsiResponse::sense_segment(s))
            .unwrap_or_default(),
    }
}

/// A SCSI Response carrying only a status and optional sense data (no
/// Data-In), e.g. for a command the transport itself fails.
pub fn status_only(
    itt: u32,
    status: Status,
    sense: Option<Bytes>,
    residual: Residual,
) -> ScsiResponse {
    let c = Completion {
        itt,
        lun: 0,
        status,
        sense,
        data_in: Bytes::new(),
        residual,
    };
    response(&c, DataSn::new(0))
}

/// What is wrong with the Data-In of a command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DataInError {
    /// RFC 7143 §11.7.2: "If the S bit is set to 1, the F bit MUST also be
    /// set to 1."
    #[error("the S bit without the F bit")]
    StatusWithoutFinal,
    /// RFC 7143 §7.9: a DataSN gap is a sequence error.
    #[error("DataSN {got}, expected {expected}")]
    DataSn { got: DataSn, expected: DataSn },
    /// RFC 7143 §11.7.4: data beyond the expected length is a target error.
    #[error("Data-In offset {offset}+{len} beyond expected {expected}")]
    BeyondExpected {
        offset: u32,
        len: usize,
        expected: usize,
    },
    /// With DataPDUInOrder/DataSequenceInOrder the target sends contiguous
    /// data; a hole or an overlap means lost data.
    #[error("Data-In covered {received} bytes of a {extent}-byte extent")]
    Holes { received: usize, extent: usize },
    /// RFC 7143 §7.9: "a SCSI Response PDU with an ExpDataSN that implies
    /// missing Data-In PDUs" is a sequence error.
    #[error("the SCSI Response says {said} Data-In PDUs were sent, {arrived} arrived")]
    MissingDataIn { said: DataSn, arrived: DataSn },
}

impl DataInError {
    /// Whether the stream is broken (session recovery at ERL 0) rather
    /// than only this command.
    pub fn is_sequence_error(&self) -> bool {
        !matches!(self, DataInError::BeyondExpected { .. })
    }
}

/// The initiator's bookkeeping of one command's Data-In. The buffer itself
/// is the caller's, sized by the caller's expected length, never by the
/// target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadProgress {
    expected: usize,
    next_data_sn: DataSn,
    received: usize,
    extent: usize,
}

impl ReadProgress {
    /// For a command that expects at most `expected` bytes of Data-In.
    pub fn new(expected: usize) -> Self {
        ReadProgress {
            expected,
            next_data_sn: DataSn::new(0),
            received: 0,
            extent: 0,
        }
    }

    /// One past the highest byte received.
    pub fn extent(&self) -> usize {
        self.extent
    }

    /// The DataSN the next Data-In must carry.
    pub fn next_data_sn(&self) -> DataSn {
        self.next_data_sn
    }

    /// Accepts one Data-In: the byte range of the caller's buffer its data
    /// goes to.
    pub fn on_data_in(&mut self, d: &DataIn) -> Result<Range<usize>, DataInError> {
        if d.status.is_some() && !d.final_ {
            return Err(DataInError::StatusWithoutFinal);
        }
        if d.data_sn != self.next_data_sn {
            return Err(DataInError::DataSn {
                got: d.data_sn,
                expected: self.next_data_sn,
            });
        }
        self.next_data_sn = self.next_data_sn.successor();
        let off = d.buffer_offset as usize;
        let end = off.saturating_add(d.data.len());
        if end > self.expected {
            return Err(DataInError::BeyondExpected {
                offset: d.buffer_offset,
                len: d.data.len(),
                expected: self.expected,
            });
        }
        if !d.data.is_empty() {
            self.extent = self.extent.max(end);
            self.received += d.data.len();
        }
        Ok(off..end)
    }

    /// The status arrived (in the last Data-In or a SCSI Response with
    /// `exp_data_sn`, 0 when it rode in a Data-In): the data must be whole.
    pub fn finish(&self, exp_data_sn: Option<DataSn>) -> Result<usize, DataInError> {
        if let Some(said) = exp_data_sn {
            // ExpDataSN 0 means none sent (or not counted by the target).
            if said != DataSn::new(0) && said.gt(self.next_data_sn) {
                return Err(DataInError::MissingDataIn {
                    said,
                    arrived: self.next_data_sn,
                });
            }
        }
        if self.received != self.extent {
            return Err(DataInError::Holes {
                received: self.received,
                extent: self.extent,
            });
        }
        Ok(self.extent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(len: usize, status: Status, sense: Option<Bytes>) -> Completion {
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
        let c = completion(10_000, Status::GOOD, None);
        let pdus = build(&c, LIM);
        assert_eq!(pdus.len(), 10);
        let mut expect_offset = 0;
        for (i, p) in pdus.iter().enumerate() {
            let Pdu::DataIn(d) = p else {
                panic!("expected Data-In only")
            };
            assert_eq!(d.data_sn, DataSn::new(i as u32));
            assert_eq!(d.buffer_offset, expect_offset);
            assert!(d.data.len() <= 1024);
            expect_offset += d.data.len() as u32;
            // F at each 4096-byte burst end and at the very end.
            let burst_end = expect_offset % 4096 == 0 || i == 9;
            assert_eq!(d.final_, burst_end, "pdu {i}");
            assert_eq!(d.status.is_some(), i == 9);
        }
        assert_eq!(expect_offset, 10_000);
        let Pdu::DataIn(last) = &pdus[9] else {
            unreachable!()
        };
        assert_eq!(&last.data[..], &c.data_in[9216..]);
        assert_eq!(last.data.as_ptr(), c.data_in[9216..].as_ptr(), "no copy");
    }

    #[test]
    fn sense_forces_a_separate_response() {
        let sense =
            Bytes::from_static(&[0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0]);
        let mut c = completion(0, Status::CHECK_CONDITION, Some(sense.clone()));
        c.residual = Residual::compute(512, 0);
        let pdus = build(&c, LIM);
        assert_eq!(pdus.len(), 1);
        let Pdu::ScsiResponse(r) = &pdus[0] else {
            panic!()
        };
        assert_eq!(r.status, Status::CHECK_CONDITION.0);
        assert_eq!(r.sense().unwrap(), sense);
        assert!(r.underflow && !r.overflow);
        assert_eq!(r.residual_count, 512);
        assert_eq!(r.exp_data_sn, DataSn::new(0));
    }

    #[test]
    fn data_with_check_condition_gets_both() {
        let c = completion(
            100,
            Status::CHECK_CONDITION,
            Some(Bytes::from_static(&[0x70; 18])),
        );
        let pdus = build(&c, LIM);
        assert_eq!(pdus.len(), 2);
        let Pdu::DataIn(d) = &pdus[0] else { panic!() };
        assert!(d.status.is_none() && d.final_);
        let Pdu::ScsiResponse(r) = &pdus[1] else {
            panic!()
        };
        assert_eq!(r.exp_data_sn, DataSn::new(1));
    }

    #[test]
    fn status_only_response() {
        let r = status_only(9, Status::GOOD, None, Residual::compute(0, 512));
        assert_eq!(r.itt, 9);
        assert!(r.overflow);
        assert_eq!(r.residual_count, 512);
        assert!(r.data.is_empty());
    }

    #[test]
    fn read_progress_accepts_what_build_sends() {
        let c = completion(10_000, Status::GOOD, None);
        let mut p = ReadProgress::new(10_000);
        let mut buf = vec![0u8; 10_000];
        for pdu in build(&c, LIM) {
            let Pdu::DataIn(d) = pdu else { panic!() };
            let r = p.on_data_in(&d).unwrap();
            buf[r].copy_from_slice(&d.data);
        }
        assert_eq!(p.finish(None), Ok(10_000));
        assert_eq!(&buf[..], &c.data_in[..]);
    }

    #[test]
    fn read_progress_errors() {
        let c = completion(3000, Status::GOOD, None);
        let pdus: Vec<DataIn> = build(&c, LIM)
            .into_iter()
            .filter_map(|p| match p {
                Pdu::DataIn(d) => Some(d),
                _ => None,
            })
            .collect();
        // A gap in DataSN is a sequence error.
        let mut p = ReadProgress::new(3000);
        p.on_data_in(&pdus[0]).unwrap();
        let e = p.on_data_in(&pdus[2]).unwrap_err();
        assert!(e.is_sequence_error());
        // More data than expected fails only the command.
        let mut p = ReadProgress::new(1000);
        let e = p.on_data_in(&pdus[0]).unwrap_err();
        assert!(!e.is_sequence_error());
        // S without F.
        let mut bad = pdus[2].clone();
        bad.final_ = false;
        let mut p = ReadProgress::new(3000);
        p.on_data_in(&pdus[0]).unwrap();
        p.on_data_in(&pdus[1]).unwrap();
        assert_eq!(p.on_data_in(&bad), Err(DataInError::StatusWithoutFinal));
        // A response claiming more Data-In than arrived.
        let mut p = ReadProgress::new(3000);
        p.on_data_in(&pdus[0]).unwrap();
        assert!(matches!(
            p.finish(Some(DataSn::new(3))),
            Err(DataInError::MissingDataIn { said, arrived })
                if said == DataSn::new(3) && arrived == DataSn::new(1)
        ));
        // Overlapping data (same offset twice) leaves a hole.
        let mut again = pdus[1].clone();
        again.buffer_offset = 0;
        let mut p = ReadProgress::new(3000);
        p.on_data_in(&pdus[0]).unwrap();
        p.on_data_in(&again).unwrap();
        assert!(matches!(p.finish(None), Err(DataInError::Holes { .. })));
    }
}
