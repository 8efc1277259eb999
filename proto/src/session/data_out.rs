//! The initiator's side of write data transfer (RFC 7143 §4.2.5.2, §11.7,
//! §11.8, §13.10-13.14): how much goes as immediate data and unsolicited
//! Data-Out, splitting a range into Data-Out PDUs, and the checks on an
//! arriving R2T. (The target's side is [`crate::session::collector`].)

use bytes::Bytes;
use thiserror::Error;

use crate::pdu::{DataOut, R2t, RESERVED_TAG};
use crate::serial::{DataSn, R2tSn, StatSn};

/// One Data-Out PDU's place in a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// DataSN: from 0 in each sequence (RFC 7143 §11.7.5).
    pub data_sn: DataSn,
    /// BufferOffset of the first byte.
    pub offset: u32,
    /// One past the last byte.
    pub end: u32,
    /// F bit: the last PDU of the sequence.
    pub final_: bool,
}

/// The PDUs of one sequence `[from, to)`, each at most `max_dsl` bytes
/// (the receiver's MaxRecvDataSegmentLength, RFC 7143 §13.12).
pub fn segments(from: u32, to: u32, max_dsl: u32) -> impl Iterator<Item = Segment> {
    let step = max_dsl.max(1);
    let mut off = from;
    let mut data_sn = DataSn::new(0);
    std::iter::from_fn(move || {
        if off >= to {
            return None;
        }
        let end = off.saturating_add(step).min(to);
        let s = Segment {
            data_sn,
            offset: off,
            end,
            final_: end == to,
        };
        data_sn = data_sn.successor();
        off = end;
        Some(s)
    })
}

/// What the sequence of Data-Outs belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOutTarget {
    pub lun: u64,
    pub itt: u32,
    /// The R2T's Target Transfer Tag, or the reserved tag for unsolicited data.
    pub ttt: u32,
}

/// Data-Out PDUs carrying `data[from..to]` (`Bytes` slices: no copy);
/// ExpStatSN is stamped when they are sent.
pub fn data_out_pdus(
    data: &Bytes,
    to_task: DataOutTarget,
    from: u32,
    to: u32,
    max_dsl: u32,
) -> impl Iterator<Item = DataOut> + '_ {
    let to = to.min(data.len() as u32);
    segments(from, to, max_dsl).map(move |s| DataOut {
        final_: s.final_,
        lun: to_task.lun,
        itt: to_task.itt,
        ttt: to_task.ttt,
        exp_stat_sn: StatSn::new(0),
        data_sn: s.data_sn,
        buffer_offset: s.offset,
        data: data.slice(s.offset as usize..s.end as usize),
    })
}

/// Negotiated values that shape what an initiator sends unsolicited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsolicitedLimits {
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub first_burst_length: u32,
    /// The target's MaxRecvDataSegmentLength.
    pub max_send_data_segment_length: u32,
}

/// How a write of `len` bytes starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsolicitedPlan {
    /// Bytes in the SCSI Command PDU's data segment.
    pub immediate: u32,
    /// End of the unsolicited data (immediate data included); the range
    /// `[immediate, end)` goes as unsolicited Data-Out (TTT 0xffffffff).
    pub end: u32,
}

impl UnsolicitedPlan {
    /// RFC 7143 §13.11/§13.12: immediate data up to FirstBurstLength and
    /// the target's MaxRecvDataSegmentLength; §13.10: InitialR2T=No allows
    /// unsolicited Data-Out up to FirstBurstLength (immediate included).
    pub fn new(len: u32, l: UnsolicitedLimits) -> Self {
        let immediate = if l.immediate_data {
            len.min(l.first_burst_length)
                .min(l.max_send_data_segment_length)
        } else {
            0
        };
        let end = if l.initial_r2t {
            immediate
        } else {
            len.min(l.first_burst_length).max(immediate)
        };
        UnsolicitedPlan { immediate, end }
    }

    /// RFC 7143 §11.3.1: F=1 on the command when no unsolicited Data-Out
    /// follows.
    pub fn data_out_follows(&self) -> bool {
        self.end > self.immediate
    }
}

/// What is wrong with an R2T (each fails the command or the connection).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum R2tError {
    /// RFC 7143 §7.9: an out-of-order R2TSN is a sequence error.
    #[error("R2TSN {got}, expected {expected}")]
    R2tSn { got: R2tSn, expected: R2tSn },
    #[error("R2T for {offset}..{end} beyond the {len} bytes of the command")]
    BeyondData { offset: u32, end: u64, len: u32 },
    #[error("R2T asks for {len} bytes, more than MaxBurstLength {max}")]
    BurstTooLong { len: u32, max: u32 },
    #[error("R2T with the reserved Target Transfer Tag")]
    ReservedTtt,
}

impl R2tError {
    /// Whether the error breaks the sequence (session recovery at ERL 0)
    /// rather than only the command.
    pub fn is_sequence_error(&self) -> bool {
        matches!(self, R2tError::R2tSn { .. })
    }
}

/// Checks an R2T for a write of `len` bytes whose next R2TSN is
/// `*expected`; advances `expected` when the R2TSN is right.
pub fn check_r2t(
    r: &R2t,
    len: u32,
    max_burst_length: u32,
    expected: &mut R2tSn,
) -> Result<(), R2tError> {
    if r.r2t_sn != *expected {
        return Err(R2tError::R2tSn {
            got: r.r2t_sn,
            expected: *expected,
        });
    }
    *expected = expected.successor();
    let end = u64::from(r.buffer_offset) + u64::from(r.desired_data_transfer_length);
    if end > u64::from(len) || r.desired_data_transfer_length == 0 {
        return Err(R2tError::BeyondData {
            offset: r.buffer_offset,
            end,
            len,
        });
    }
    // RFC 7143 §11.8.3: "The target MUST NOT request more than
    // MaxBurstLength bytes of data in one R2T."
    if r.desired_data_transfer_length > max_burst_length {
        return Err(R2tError::BurstTooLong {
            len: r.desired_data_transfer_length,
            max: max_burst_length,
        });
    }
    // RFC 7143 §11.8.2: the TTT of an R2T is never the reserved value.
    if r.ttt == RESERVED_TAG {
        return Err(R2tError::ReservedTtt);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::CmdSn;

    #[test]
    fn split_respects_max_dsl_and_sets_final() {
        let data = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let t = DataOutTarget {
            lun: 5,
            itt: 7,
            ttt: 9,
        };
        let pdus: Vec<DataOut> = data_out_pdus(&data, t, 1000, 9000, 3000).collect();
        assert_eq!(pdus.len(), 3);
        assert_eq!(pdus.iter().map(|d| d.data.len()).sum::<usize>(), 8000);
        assert!(pdus
            .iter()
            .all(|d| d.data.len() <= 3000 && d.ttt == 9 && d.itt == 7 && d.lun == 5));
        assert_eq!(
            pdus.iter().map(|d| d.data_sn.get()).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(
            pdus.iter().map(|d| d.final_).collect::<Vec<_>>(),
            vec![false, false, true]
        );
        assert_eq!(pdus[1].buffer_offset, 4000);
        assert_eq!(&pdus[1].data[..], &data[4000..7000]);
        // A range beyond the data is cut at its end.
        assert_eq!(data_out_pdus(&data, t, 9000, 20_000, 8192).count(), 1);
        assert_eq!(segments(5, 5, 10).count(), 0);
    }

    #[test]
    fn unsolicited_plans() {
        let l = UnsolicitedLimits {
            immediate_data: true,
            initial_r2t: false,
            first_burst_length: 65536,
            max_send_data_segment_length: 8192,
        };
        let p = UnsolicitedPlan::new(1 << 20, l);
        assert_eq!((p.immediate, p.end), (8192, 65536));
        assert!(p.data_out_follows());
        let p = UnsolicitedPlan::new(4096, l);
        assert_eq!((p.immediate, p.end), (4096, 4096));
        assert!(!p.data_out_follows());
        let strict = UnsolicitedLimits {
            immediate_data: false,
            initial_r2t: true,
            ..l
        };
        let p = UnsolicitedPlan::new(1 << 20, strict);
        assert_eq!((p.immediate, p.end), (0, 0));
    }

    #[test]
    fn r2t_checks() {
        let r2t = |sn, off, len, ttt| R2t {
            lun: 0,
            itt: 1,
            ttt,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            r2t_sn: R2tSn::new(sn),
            buffer_offset: off,
            desired_data_transfer_length: len,
            data: Bytes::new(),
        };
        let mut next = R2tSn::new(0);
        assert_eq!(
            check_r2t(&r2t(0, 0, 4096, 5), 8192, 4096, &mut next),
            Ok(())
        );
        assert!(check_r2t(&r2t(0, 4096, 4096, 5), 8192, 4096, &mut next)
            .unwrap_err()
            .is_sequence_error());
        assert!(matches!(
            check_r2t(&r2t(1, 4096, 8192, 5), 8192, 65536, &mut next),
            Err(R2tError::BeyondData { .. })
        ));
        assert!(matches!(
            check_r2t(&r2t(2, 0, 8192, 5), 8192, 4096, &mut next),
            Err(R2tError::BurstTooLong { .. })
        ));
        assert_eq!(
            check_r2t(&r2t(3, 0, 512, RESERVED_TAG), 8192, 4096, &mut next),
            Err(R2tError::ReservedTtt)
        );
    }
}
