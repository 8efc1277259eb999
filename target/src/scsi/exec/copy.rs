//! Third-party copy: EXTENDED COPY (LID1) (SPC-4 §6.4) between logical
//! units of this target and RECEIVE COPY RESULTS (SPC-3 §6.18).

use super::{invalid_cdb, truncate, write_protected, Ctx, Fail, R};
use crate::backend::{BackendError, IoDir};
use crate::scsi::lu::{IoMode, LogicalUnit};
use bytes::Bytes;
use proto::scsi::cdb::sa;
use proto::scsi::inquiry as inq;
use proto::scsi::{Asc, Sense, SenseKey};

impl Ctx<'_> {
    /// EXTENDED COPY (LID1) (SPC-4 §6.4): block-to-block copies between
    /// logical units of this target, named by their designators.
    pub(super) async fn extended_copy(&self, param_len: u32) -> R {
        if param_len == 0 {
            return Ok(Bytes::new());
        }
        let p = self.data_out(param_len as u64)?;
        let list = crate::scsi::xcopy::parse(&p).map_err(Fail::Check)?;
        let result = self.run_copy(&list).await;
        if list.hold {
            let (ok, processed, bytes) = match &result {
                Ok((n, b)) => (true, *n, *b),
                Err((n, b, _)) => (false, *n, *b),
            };
            self.lu.state().copy_results.insert(
                (self.nexus.clone(), list.list_id),
                crate::scsi::lu::CopyResult {
                    ok,
                    segments_processed: processed,
                    transfer_count_bytes: bytes,
                },
            );
        }
        result.map(|_| Bytes::new()).map_err(|(_, _, f)| f)
    }

    /// Runs the segments; on failure returns how far it got and the error.
    pub(super) async fn run_copy(
        &self,
        list: &crate::scsi::xcopy::CopyList,
    ) -> Result<(u16, u64), (u16, u64, Fail)> {
        let aborted = |asc: Asc| Fail::Check(Sense::new(SenseKey::COPY_ABORTED, asc));
        let mut lus = Vec::new();
        for t in &list.targets {
            // Only LUs this I_T nexus may access are copy targets.
            let found = self
                .srv
                .all()
                .into_iter()
                .filter(|l| self.srv.can_access(self.nexus, l.cfg.lun))
                .find(|l| match t.designator_type {
                    inq::designator::NAA => t.designator == l.naa,
                    inq::designator::T10_VENDOR_ID => {
                        let mut v = inq::ascii_field::<8>(&l.cfg.vendor).to_vec();
                        v.extend_from_slice(l.serial.as_bytes());
                        t.designator == v
                    }
                    _ => false,
                });
            match found {
                Some(l) => lus.push(l),
                None => return Err((0, 0, aborted(Asc::UNREACHABLE_COPY_TARGET))),
            }
        }
        let (mut done, mut bytes) = (0u16, 0u64);
        for seg in &list.segments {
            let (Some(src), Some(dst)) = (
                lus.get(seg.src as usize).cloned(),
                lus.get(seg.dst as usize).cloned(),
            ) else {
                return Err((done, bytes, aborted(Asc::COPY_TARGET_DEVICE_NOT_REACHABLE)));
            };
            {
                let st = dst.state();
                if st.mode == IoMode::ReadOnly || st.modes.swp {
                    return Err((done, bytes, write_protected()));
                }
            }
            let (sbs, dbs) = (src.block_size() as u64, dst.block_size() as u64);
            let len = seg.blocks as u64 * if seg.dc { dbs } else { sbs };
            if !len.is_multiple_of(sbs) || !len.is_multiple_of(dbs) {
                return Err((done, bytes, aborted(Asc::NO_ADDITIONAL_SENSE)));
            }
            let in_range = |lu: &LogicalUnit, lba: u64, n: u64| {
                lba.checked_add(n).is_some_and(|e| e <= lu.num_blocks())
            };
            if !in_range(&src, seg.src_lba, len / sbs) || !in_range(&dst, seg.dst_lba, len / dbs) {
                return Err((done, bytes, aborted(Asc::NO_ADDITIONAL_SENSE)));
            }
            if len > 0 {
                let _g = dst.locks.lock(seg.dst_lba, seg.dst_lba + len / dbs).await;
                let (sb, db) = (src.cfg.backend.clone(), dst.cfg.backend.clone());
                let (so, d_o) = (seg.src_lba * sbs, seg.dst_lba * dbs);
                let r = tokio::task::spawn_blocking(move || -> Result<(), BackendError> {
                    let chunk = (1u64 << 20).min(len) as usize;
                    let mut buf = vec![0u8; chunk];
                    let mut off = 0u64;
                    while off < len {
                        let n = (len - off).min(chunk as u64) as usize;
                        sb.read_at(&mut buf[..n], so + off)?;
                        db.write_at(&buf[..n], d_o + off)?;
                        off += n as u64;
                    }
                    Ok(())
                })
                .await;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err((done, bytes, Fail::Check(e.sense(IoDir::Write)))),
                    Err(_) => return Err((done, bytes, aborted(Asc::NO_ADDITIONAL_SENSE))),
                }
                if self.must_sync(false) {
                    let db = dst.cfg.backend.clone();
                    let _ = tokio::task::spawn_blocking(move || db.flush()).await;
                }
            }
            done += 1;
            bytes += len;
        }
        Ok((done, bytes))
    }

    /// RECEIVE COPY RESULTS (SPC-3 §6.18): COPY STATUS of a held list,
    /// OPERATING PARAMETERS.
    pub(super) fn receive_copy_results(
        &self,
        service_action: u8,
        list_id: u8,
        alloc_len: u32,
    ) -> R {
        let data = match service_action as u16 {
            sa::RCR_COPY_STATUS => {
                let st = self.lu.state();
                let Some(r) = st.copy_results.get(&(self.nexus.clone(), list_id)) else {
                    return Err(invalid_cdb(2, None));
                };
                crate::scsi::xcopy::copy_status(r.ok, r.segments_processed, r.transfer_count_bytes)
            }
            sa::RCR_OPERATING_PARAMETERS => crate::scsi::xcopy::operating_parameters(),
            _ => return Err(invalid_cdb(1, Some(4))),
        };
        Ok(truncate(data, alloc_len as usize))
    }
}
