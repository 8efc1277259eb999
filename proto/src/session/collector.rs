//! Collecting a write command's data: immediate data, unsolicited Data-Out
//! (InitialR2T=No, FirstBurstLength) and solicited Data-Out answering R2Ts
//! (MaxOutstandingR2T, MaxBurstLength). RFC 7143 §4.2.5.2 (data transfer),
//! §11.7 (Data-Out), §11.8 (R2T), §13.10-13.14.
//!
//! Target side. [`WriteCollector`] says which R2Ts to send and when the
//! data is complete; the connection sends them. (The initiator's side of
//! the same rules is [`crate::session::data_out`].) We negotiate DataPDUInOrder=Yes and
//! DataSequenceInOrder=Yes, so within a sequence DataSN and BufferOffset
//! must increase exactly; a violation is a protocol error that ends the
//! connection (ErrorRecoveryLevel 0: RFC 7143 §7.1.4.1 "the target ...
//! MUST ... terminate the connection" is the only recovery).
//!
//! The write buffer is allocated with capacity EDTL but not zero-filled:
//! data is appended as it arrives in offset order. Several sequences can
//! be open at once (the unsolicited one and up to MaxOutstandingR2T
//! solicited ones) and an initiator may interleave their PDUs, so a
//! segment that starts beyond the filled prefix is parked (zero copy,
//! a `Bytes` of the receive buffer) until the gap before it is filled.
//! The sequences tile `[immediate, EDTL)` without overlap and each one is
//! received at exactly increasing offsets, so every byte is written once
//! and the buffer is complete exactly when its length reaches EDTL.
//!
//! Data digest errors (RFC 7143 §7.8): a target that receives a Data-Out
//! whose data digest fails "MUST answer with a Reject PDU ... and discard
//! the PDU", then either request the data again with a recovery R2T (an
//! ERL 1 feature) or "terminate the task with a response PDU with a CHECK
//! CONDITION status and an iSCSI Condition of 'protocol service CRC
//! error'", in which case "it MUST wait to receive all the data (signaled
//! by a Data PDU with the final bit set for all outstanding R2Ts) before
//! sending the response PDU". At ERL 0 we take the second way:
//! [`WriteCollector::discard_after_digest_error`] drops what was collected
//! (nothing of the command reaches the backend), offers no more R2Ts, and
//! [`WriteCollector::is_drained`] says when every open sequence has ended.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use crate::pdu::{R2t, RESERVED_TAG};
use crate::serial::{CmdSn, DataSn, R2tSn, StatSn};

/// Negotiated values that shape a write's data transfer.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub first_burst_length: u32,
    pub max_burst_length: u32,
    pub max_outstanding_r2t: u32,
    /// Our MaxRecvDataSegmentLength: the largest Data-Out segment we accept.
    pub max_recv_data_segment_length: u32,
}

/// Data transfer protocol errors (each ends the connection at ERL 0).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DataOutError {
    #[error("immediate data sent although ImmediateData=No")]
    ImmediateDataNotAllowed,
    #[error("unsolicited Data-Out although InitialR2T=Yes")]
    UnsolicitedNotAllowed,
    #[error("unsolicited data beyond FirstBurstLength ({0} bytes)")]
    FirstBurstExceeded(u32),
    #[error("data beyond the expected data transfer length")]
    BeyondEdtl,
    #[error("Data-Out for unknown Target Transfer Tag {0:#x}")]
    UnknownTtt(u32),
    #[error("DataSN {got} where {expected} was expected")]
    DataSn { got: DataSn, expected: DataSn },
    #[error("BufferOffset {got} where {expected} was expected")]
    BufferOffset { got: u32, expected: u32 },
    #[error("sequence ended (F bit) after {got} of {expected} bytes")]
    ShortSequence { got: u32, expected: u32 },
    #[error("sequence longer than its burst ({0} bytes)")]
    LongSequence(u32),
}

/// An R2T to send (the connection fills LUN, ITT and the SN fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tRequest {
    pub ttt: u32,
    pub r2t_sn: R2tSn,
    pub buffer_offset: u32,
    pub desired_data_transfer_length: u32,
}

impl R2tRequest {
    /// The R2T PDU for task `itt` on `lun` (StatSN and the window are
    /// stamped when it is sent).
    pub fn to_pdu(self, lun: u64, itt: u32) -> R2t {
        R2t {
            lun,
            itt,
            ttt: self.ttt,
            stat_sn: StatSn::new(0),
            exp_cmd_sn: CmdSn::new(0),
            max_cmd_sn: CmdSn::new(0),
            r2t_sn: self.r2t_sn,
            buffer_offset: self.buffer_offset,
            desired_data_transfer_length: self.desired_data_transfer_length,
            data: Bytes::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Sequence {
    ttt: u32,
    start: u32,
    len: u32,
    received: u32,
    next_data_sn: DataSn,
}

/// Data collection for one write command.
#[derive(Debug)]
pub struct WriteCollector {
    edtl: u32,
    /// The contiguous prefix `[0, len)` of the data received so far
    /// (capacity EDTL, never zero-filled).
    buf: Option<BytesMut>,
    /// Segments received beyond the prefix, by BufferOffset (interleaved
    /// sequences); appended once the gap before them is filled.
    parked: BTreeMap<u32, Bytes>,
    /// When all the data arrived in one piece (immediate data), kept as is
    /// (zero copy).
    whole: Option<Bytes>,
    received_total: u32,
    unsolicited: Option<Sequence>,
    solicited: Vec<Sequence>,
    next_r2t_offset: u32,
    next_r2t_sn: R2tSn,
    limits: WriteLimits,
    /// A Data-Out failed its data digest: data is discarded from now on.
    discarding: bool,
}

impl WriteCollector {
    /// Start collecting for a command with `edtl` bytes expected;
    /// `immediate` is the command PDU's data segment, `final_` its F bit.
    ///
    /// RFC 7143 §11.3.4 (F bit): "when the F bit is 0 ... unsolicited
    /// Data-Out PDUs follow"; the unsolicited part is bounded by
    /// FirstBurstLength (§13.14).
    pub fn new(
        edtl: u32,
        immediate: Bytes,
        final_: bool,
        limits: WriteLimits,
    ) -> Result<WriteCollector, DataOutError> {
        let imm_len = immediate.len() as u32;
        if imm_len > 0 && !limits.immediate_data {
            return Err(DataOutError::ImmediateDataNotAllowed);
        }
        if imm_len > edtl {
            return Err(DataOutError::BeyondEdtl);
        }
        if imm_len > limits.first_burst_length {
            return Err(DataOutError::FirstBurstExceeded(imm_len));
        }
        let unsolicited_end = if final_ {
            imm_len
        } else {
            if limits.initial_r2t {
                return Err(DataOutError::UnsolicitedNotAllowed);
            }
            limits.first_burst_length.min(edtl)
        };
        let mut c = WriteCollector {
            edtl,
            buf: None,
            parked: BTreeMap::new(),
            whole: None,
            received_total: imm_len,
            unsolicited: None,
            solicited: Vec::new(),
            next_r2t_offset: unsolicited_end,
            next_r2t_sn: R2tSn::new(0),
            limits,
            discarding: false,
        };
        if imm_len == edtl {
            c.whole = Some(immediate);
        } else {
            // EDTL was checked against the per-command limit by the caller
            // before we get here; nothing is zero-filled (see module docs).
            let mut b = BytesMut::with_capacity(edtl as usize);
            b.extend_from_slice(&immediate);
            c.buf = Some(b);
            if unsolicited_end > imm_len {
                c.unsolicited = Some(Sequence {
                    ttt: RESERVED_TAG,
                    start: imm_len,
                    len: unsolicited_end - imm_len,
                    received: 0,
                    next_data_sn: DataSn::new(0),
                });
            }
        }
        Ok(c)
    }

    /// Whether every byte has arrived.
    pub fn is_complete(&self) -> bool {
        if self.discarding {
            return false;
        }
        match (&self.whole, &self.buf) {
            (Some(_), _) => true,
            (None, Some(b)) => b.len() == self.edtl as usize,
            (None, None) => self.received_total >= self.edtl,
        }
    }

    /// The R2Ts that may be sent now (respecting MaxOutstandingR2T).
    /// `alloc_ttt` gives fresh Target Transfer Tags.
    pub fn next_r2ts(&mut self, mut alloc_ttt: impl FnMut() -> u32) -> Vec<R2tRequest> {
        let mut out = Vec::new();
        let max_out = self.limits.max_outstanding_r2t.max(1) as usize;
        let burst = self.limits.max_burst_length.max(512);
        while !self.discarding && self.solicited.len() < max_out && self.next_r2t_offset < self.edtl
        {
            let len = burst.min(self.edtl - self.next_r2t_offset);
            let ttt = alloc_ttt();
            let r = R2tRequest {
                ttt,
                r2t_sn: self.next_r2t_sn,
                buffer_offset: self.next_r2t_offset,
                desired_data_transfer_length: len,
            };
            self.solicited.push(Sequence {
                ttt,
                start: self.next_r2t_offset,
                len,
                received: 0,
                next_data_sn: DataSn::new(0),
            });
            self.next_r2t_sn = self.next_r2t_sn.successor();
            self.next_r2t_offset += len;
            out.push(r);
        }
        out
    }

    /// Number of R2Ts sent so far (for ExpDataSN bookkeeping).
    pub fn r2ts_sent(&self) -> u32 {
        self.next_r2t_sn.get()
    }

    /// Whether `ttt` names one of this command's open sequences.
    pub fn has_ttt(&self, ttt: u32) -> bool {
        if ttt == RESERVED_TAG {
            self.unsolicited.is_some()
        } else {
            self.solicited.iter().any(|s| s.ttt == ttt)
        }
    }

    /// Accept one Data-Out PDU.
    pub fn data_out(
        &mut self,
        ttt: u32,
        data_sn: DataSn,
        buffer_offset: u32,
        final_: bool,
        data: Bytes,
    ) -> Result<(), DataOutError> {
        if self.discarding {
            // Only the end of each open sequence matters now (module docs).
            if final_ {
                self.close_sequence(ttt);
            }
            return Ok(());
        }
        let len = data.len() as u32;
        let seq = if ttt == RESERVED_TAG {
            match self.unsolicited.as_mut() {
                Some(s) => s,
                None => return Err(DataOutError::UnsolicitedNotAllowed),
            }
        } else {
            match self.solicited.iter_mut().find(|s| s.ttt == ttt) {
                Some(s) => s,
                None => return Err(DataOutError::UnknownTtt(ttt)),
            }
        };
        // RFC 7143 §11.7.5: "DataSN ... starts with 0 for the first data PDU
        // in ... [each] R2T or unsolicited sequence" and is incremented by 1.
        if data_sn != seq.next_data_sn {
            return Err(DataOutError::DataSn {
                got: data_sn,
                expected: seq.next_data_sn,
            });
        }
        let expected_offset = seq.start + seq.received;
        if buffer_offset != expected_offset {
            return Err(DataOutError::BufferOffset {
                got: buffer_offset,
                expected: expected_offset,
            });
        }
        if seq.received + len > seq.len {
            if ttt == RESERVED_TAG {
                return Err(DataOutError::FirstBurstExceeded(
                    seq.start + seq.received + len,
                ));
            }
            return Err(DataOutError::LongSequence(seq.received + len));
        }
        if len > self.limits.max_recv_data_segment_length {
            return Err(DataOutError::LongSequence(len));
        }
        let buf = self.buf.as_mut().ok_or(DataOutError::BeyondEdtl)?;
        let filled = buf.len() as u32;
        if buffer_offset < filled {
            // Cannot happen: sequences are disjoint and checked above.
            return Err(DataOutError::BufferOffset {
                got: buffer_offset,
                expected: filled,
            });
        }
        if buffer_offset == filled {
            buf.extend_from_slice(&data);
            while let Some(e) = self.parked.first_entry() {
                if *e.key() as usize != buf.len() {
                    break;
                }
                buf.extend_from_slice(&e.remove());
            }
        } else if !data.is_empty() {
            self.parked.insert(buffer_offset, data);
        }
        seq.received += len;
        seq.next_data_sn = seq.next_data_sn.successor();
        self.received_total += len;
        let done = seq.received == seq.len;
        if final_ && !done {
            // The unsolicited sequence may end early only if the initiator
            // sends less than FirstBurstLength because EDTL is smaller; that
            // case already has len = min(FBL, EDTL) - imm. Anything else is
            // a short sequence.
            return Err(DataOutError::ShortSequence {
                got: seq.received,
                expected: seq.len,
            });
        }
        if done {
            self.close_sequence(ttt);
        }
        Ok(())
    }

    fn close_sequence(&mut self, ttt: u32) {
        if ttt == RESERVED_TAG {
            self.unsolicited = None;
        } else {
            self.solicited.retain(|s| s.ttt != ttt);
        }
    }

    /// A Data-Out of this command failed its data digest (RFC 7143 §7.8,
    /// see the module docs); `ttt` and `final_` come from its header. The
    /// data collected so far is dropped, later Data-Out are only counted
    /// for their F bits, and no further R2T is offered.
    pub fn discard_after_digest_error(&mut self, ttt: u32, final_: bool) {
        self.discarding = true;
        self.buf = None;
        self.whole = None;
        self.parked.clear();
        if final_ {
            self.close_sequence(ttt);
        }
    }

    /// Whether the data is being discarded after a digest error.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Discarding, and every sequence that was open has ended: the task
    /// may now be answered with CHECK CONDITION (RFC 7143 §7.8).
    pub fn is_drained(&self) -> bool {
        self.discarding && self.unsolicited.is_none() && self.solicited.is_empty()
    }

    /// The collected data (all `edtl` bytes). Call once complete.
    pub fn take_data(&mut self) -> Bytes {
        if let Some(w) = self.whole.take() {
            return w;
        }
        self.buf.take().map(BytesMut::freeze).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::SerialNumber;

    fn sn(v: u32) -> SerialNumber {
        SerialNumber::new(v)
    }

    fn limits(initial_r2t: bool) -> WriteLimits {
        WriteLimits {
            immediate_data: true,
            initial_r2t,
            first_burst_length: 1024,
            max_burst_length: 2048,
            max_outstanding_r2t: 2,
            max_recv_data_segment_length: 1024,
        }
    }

    fn b(d: &[u8]) -> Bytes {
        Bytes::copy_from_slice(d)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7) as u8).collect()
    }

    #[test]
    fn immediate_only_is_zero_copy() {
        let d = Bytes::from(pattern(512));
        let mut c = WriteCollector::new(512, d.clone(), true, limits(true)).unwrap();
        assert!(c.is_complete());
        assert!(c.next_r2ts(|| 1).is_empty());
        let out = c.take_data();
        assert_eq!(out, d);
        assert_eq!(out.as_ptr(), d.as_ptr());
    }

    #[test]
    fn immediate_plus_unsolicited_plus_r2t() {
        let all = pattern(6000);
        let mut c = WriteCollector::new(
            6000,
            Bytes::copy_from_slice(&all[..512]),
            false,
            limits(false),
        )
        .unwrap();
        let mut ttt = 100;
        let r2ts = c.next_r2ts(|| {
            ttt += 1;
            ttt
        });
        // Solicited part starts after FirstBurstLength: 1024..6000, bursts of 2048,
        // at most 2 outstanding.
        assert_eq!(r2ts.len(), 2);
        assert_eq!(r2ts[0].buffer_offset, 1024);
        assert_eq!(r2ts[0].desired_data_transfer_length, 2048);
        assert_eq!(r2ts[1].buffer_offset, 3072);
        assert_eq!(r2ts[1].r2t_sn, sn(1));
        // Unsolicited Data-Out 512..1024.
        c.data_out(RESERVED_TAG, sn(0), 512, true, b(&all[512..1024]))
            .unwrap();
        // First R2T sequence, two PDUs.
        c.data_out(101, sn(0), 1024, false, b(&all[1024..2048]))
            .unwrap();
        assert_eq!(
            c.data_out(101, sn(0), 2048, true, b(&all[2048..3072])),
            Err(DataOutError::DataSn {
                got: sn(0),
                expected: sn(1)
            })
        );
        c.data_out(101, sn(1), 2048, true, b(&all[2048..3072]))
            .unwrap();
        let more = c.next_r2ts(|| 200);
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].buffer_offset, 5120);
        assert_eq!(more[0].desired_data_transfer_length, 880);
        c.data_out(102, sn(0), 3072, false, b(&all[3072..4096]))
            .unwrap();
        c.data_out(102, sn(1), 4096, true, b(&all[4096..5120]))
            .unwrap();
        assert!(!c.is_complete());
        c.data_out(200, sn(0), 5120, true, b(&all[5120..6000]))
            .unwrap();
        assert!(c.is_complete());
        assert_eq!(&c.take_data()[..], &all[..]);
    }

    #[test]
    fn protocol_violations() {
        let mut l = limits(true);
        assert_eq!(
            WriteCollector::new(1024, Bytes::new(), false, l).unwrap_err(),
            DataOutError::UnsolicitedNotAllowed
        );
        assert_eq!(
            WriteCollector::new(100, Bytes::from(pattern(200)), true, l).unwrap_err(),
            DataOutError::BeyondEdtl
        );
        l.immediate_data = false;
        assert_eq!(
            WriteCollector::new(1024, Bytes::from(pattern(10)), true, l).unwrap_err(),
            DataOutError::ImmediateDataNotAllowed
        );
        let mut c = WriteCollector::new(2048, Bytes::new(), true, limits(true)).unwrap();
        let r = c.next_r2ts(|| 5);
        assert_eq!(r.len(), 1);
        assert_eq!(
            c.data_out(RESERVED_TAG, sn(0), 0, true, b(&[0; 512])),
            Err(DataOutError::UnsolicitedNotAllowed)
        );
        assert_eq!(
            c.data_out(6, sn(0), 0, true, b(&[0; 512])),
            Err(DataOutError::UnknownTtt(6))
        );
        assert_eq!(
            c.data_out(5, sn(0), 512, false, b(&[0; 512])),
            Err(DataOutError::BufferOffset {
                got: 512,
                expected: 0
            })
        );
        assert_eq!(
            c.data_out(5, sn(0), 0, true, b(&[0; 512])),
            Err(DataOutError::ShortSequence {
                got: 512,
                expected: 2048
            })
        );
    }

    #[test]
    fn unsolicited_bounded_by_edtl_and_first_burst() {
        // EDTL below FirstBurstLength: unsolicited covers all of it.
        let mut c = WriteCollector::new(700, Bytes::new(), false, limits(false)).unwrap();
        assert!(c.next_r2ts(|| 1).is_empty());
        c.data_out(RESERVED_TAG, sn(0), 0, false, b(&[1; 512]))
            .unwrap();
        assert_eq!(
            c.data_out(RESERVED_TAG, sn(1), 512, true, b(&[2; 300])),
            Err(DataOutError::FirstBurstExceeded(812))
        );
        c.data_out(RESERVED_TAG, sn(1), 512, true, b(&[2; 188]))
            .unwrap();
        assert!(c.is_complete());
    }

    /// A planned Data-Out: (TTT, DataSN, BufferOffset, end, F bit).
    type Planned = (u32, SerialNumber, u32, u32, bool);

    /// Data-Out PDUs of every sequence that may be sent now (the
    /// unsolicited one, then each new R2T's).
    fn plan(c: &mut WriteCollector, seg: u32) -> Vec<Vec<Planned>> {
        let mut seqs = Vec::new();
        if let Some(u) = &c.unsolicited {
            seqs.push((RESERVED_TAG, u.start, u.len));
        }
        let mut ttt = 1000;
        for r in c.next_r2ts(|| {
            ttt += 1;
            ttt
        }) {
            seqs.push((r.ttt, r.buffer_offset, r.desired_data_transfer_length));
        }
        seqs.into_iter()
            .map(|(ttt, start, len)| planned(ttt, start, len, seg))
            .collect()
    }

    fn planned(ttt: u32, start: u32, len: u32, seg: u32) -> Vec<Planned> {
        crate::session::data_out::segments(start, start + len, seg)
            .map(|s| (ttt, s.data_sn, s.offset, s.end, s.final_))
            .collect()
    }

    fn plan_r2t(r: R2tRequest, seg: u32) -> Vec<Planned> {
        planned(r.ttt, r.buffer_offset, r.desired_data_transfer_length, seg)
    }

    #[test]
    fn interleaved_sequences_are_reassembled() {
        // Unsolicited 512..1024 plus two R2T sequences 1024..3072 and
        // 3072..5072 open at once; the initiator sends the last sequence
        // first, then interleaves the others.
        let all = pattern(5072);
        let mut l = limits(false);
        l.max_recv_data_segment_length = 512;
        let mut c = WriteCollector::new(5072, b(&all[..512]), false, l).unwrap();
        let seqs = plan(&mut c, 512);
        assert_eq!(seqs.len(), 3);
        let send = |c: &mut WriteCollector, (ttt, sn, off, end, fin): Planned| {
            c.data_out(ttt, sn, off, fin, b(&all[off as usize..end as usize]))
        };
        for &p in &seqs[2] {
            send(&mut c, p).unwrap();
        }
        assert!(!c.is_complete());
        assert_eq!(
            c.buf.as_ref().unwrap().len(),
            512,
            "nothing appended past the gap"
        );
        for i in 0..4 {
            send(&mut c, seqs[1][i]).unwrap();
            if i == 0 {
                send(&mut c, seqs[0][0]).unwrap();
            }
        }
        assert!(c.is_complete());
        assert!(c.parked.is_empty());
        assert_eq!(&c.take_data()[..], &all[..]);
    }

    #[test]
    fn random_interleavings_give_the_exact_data() {
        // Any interleaving of the open sequences (each in its own order,
        // DataPDUInOrder=Yes) reassembles to the data sent.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut parked_seen = 0;
        for _ in 0..200 {
            let edtl = 1 + rnd(20_000) as u32;
            let imm = rnd(u64::from(edtl.min(1024))) as u32;
            let all = pattern(edtl as usize);
            let l = WriteLimits {
                immediate_data: true,
                initial_r2t: false,
                first_burst_length: 1024 + rnd(4096) as u32,
                max_burst_length: 512 + rnd(4096) as u32,
                max_outstanding_r2t: 1 + rnd(4) as u32,
                max_recv_data_segment_length: 256 + rnd(1024) as u32,
            };
            let final_ = imm == edtl || rnd(2) == 0;
            let mut c = WriteCollector::new(edtl, b(&all[..imm as usize]), final_, l).unwrap();
            let mut rounds = 0;
            let mut seqs = plan(&mut c, l.max_recv_data_segment_length);
            while !c.is_complete() {
                rounds += 1;
                assert!(rounds < 10_000, "stuck: edtl {edtl} imm {imm}");
                // One PDU of a random open sequence (in its own order).
                let open: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].is_empty()).collect();
                assert!(!open.is_empty(), "no data left to send: edtl {edtl}");
                let i = open[rnd(open.len() as u64) as usize];
                let (t, sn, off, end, fin) = seqs[i].remove(0);
                c.data_out(t, sn, off, fin, b(&all[off as usize..end as usize]))
                    .unwrap_or_else(|e| panic!("edtl {edtl} off {off}: {e}"));
                parked_seen += usize::from(!c.parked.is_empty());
                // A finished R2T sequence makes room for the next R2Ts.
                if fin {
                    let mut ttt = 5000 + rounds;
                    for r in c.next_r2ts(|| {
                        ttt += 1;
                        ttt
                    }) {
                        let mut more = plan_r2t(r, l.max_recv_data_segment_length);
                        seqs.push(std::mem::take(&mut more));
                    }
                }
            }
            assert!(c.parked.is_empty());
            assert_eq!(&c.take_data()[..], &all[..], "edtl {edtl} imm {imm}");
        }
        assert!(parked_seen > 100, "interleaving not exercised");
    }

    #[test]
    fn digest_error_discards_and_waits_for_every_open_sequence() {
        let all = pattern(6000);
        let mut c = WriteCollector::new(
            6000,
            Bytes::copy_from_slice(&all[..512]),
            false,
            limits(false),
        )
        .unwrap();
        let mut ttt = 100;
        let r2ts = c.next_r2ts(|| {
            ttt += 1;
            ttt
        });
        assert_eq!(
            r2ts.len(),
            2,
            "two R2T sequences open plus the unsolicited one"
        );
        let (t1, t2) = (r2ts[0].ttt, r2ts[1].ttt);
        c.data_out(t1, sn(0), 1024, false, b(&all[1024..2048]))
            .unwrap();
        // The unsolicited Data-Out (F=1) fails its digest: it closes its
        // sequence, everything is dropped, no more R2Ts are offered.
        c.discard_after_digest_error(RESERVED_TAG, true);
        assert!(c.is_discarding());
        assert!(!c.is_complete());
        assert!(!c.is_drained(), "two R2T sequences still open");
        assert!(c.next_r2ts(|| 999).is_empty());
        // Later PDUs are accepted whatever their DataSN/offset; only F counts.
        c.data_out(t1, sn(7), 0, true, b(&all[2048..3072])).unwrap();
        assert!(!c.is_drained());
        c.data_out(t2, sn(0), 3072, false, b(&all[3072..4096]))
            .unwrap();
        assert!(!c.is_drained());
        c.data_out(t2, sn(1), 4096, true, b(&all[4096..5120]))
            .unwrap();
        assert!(c.is_drained());
        assert!(c.take_data().is_empty(), "no data survives the error");
        assert!(
            c.next_r2ts(|| 999).is_empty(),
            "the rest is never asked for"
        );
    }

    #[test]
    fn digest_error_on_immediate_only_write_is_drained_at_once() {
        // Unsolicited sequence only (no R2T yet), the last Data-Out is bad.
        let mut c = WriteCollector::new(1024, b(&pattern(512)), false, limits(false)).unwrap();
        c.discard_after_digest_error(RESERVED_TAG, true);
        assert!(c.is_drained());
        // A bad PDU without F leaves the sequence open until its end.
        let mut c = WriteCollector::new(1024, b(&pattern(256)), false, limits(false)).unwrap();
        c.discard_after_digest_error(RESERVED_TAG, false);
        assert!(!c.is_drained());
        c.data_out(RESERVED_TAG, sn(1), 512, true, b(&pattern(512)))
            .unwrap();
        assert!(c.is_drained());
    }
}
