//! Thin provisioning (SBC-4 §4.7): WRITE SAME (§5.48-§5.50), UNMAP (§5.32)
//! and GET LBA STATUS (§5.8).

use super::{invalid_cdb, invalid_param, param_list_length_error, truncate, Ctx, R};
use crate::backend::IoDir;
use bytes::Bytes;
use proto::scsi::cdb::{self, CdbSize};
use proto::scsi::inquiry as inq;
use proto::scsi::{Asc, Sense};

impl Ctx<'_> {
    pub(super) async fn write_same(
        &self,
        size: CdbSize,
        lba: u64,
        blocks: u32,
        unmap: bool,
        ndob: bool,
    ) -> R {
        let n = self.lu.num_blocks();
        // SBC-4 §5.50: NUMBER OF LOGICAL BLOCKS 0 means through the last LBA
        // (WSNZ = 0), bounded by MAXIMUM WRITE SAME LENGTH.
        let count = if blocks == 0 {
            n.saturating_sub(lba)
        } else {
            blocks as u64
        };
        if lba >= n || lba.checked_add(count).is_none_or(|e| e > n) {
            return Err(Sense::illegal_request(Asc::LBA_OUT_OF_RANGE).into());
        }
        if count > self.srv.limits.max_write_same_blocks as u64 {
            return Err(invalid_cdb(
                if size == CdbSize::Sixteen { 10 } else { 7 },
                None,
            ));
        }
        self.check_writable()?;
        let bs = self.bs();
        let block = if ndob {
            if !unmap && !self.req.data_out.is_empty() {
                return Err(invalid_cdb(1, Some(0)));
            }
            Bytes::from(vec![0u8; bs as usize])
        } else {
            if self.req.data_out.len() as u64 != bs {
                return Err(
                    Sense::illegal_request(Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT).into(),
                );
            }
            self.req.data_out.clone()
        };
        let _g = self.lu.locks.lock(lba, lba + count).await;
        let thin = self.lu.thin();
        // UNMAP = 1 on a thin LU deallocates (LBPRZ = 1: the blocks then
        // read as zeros) whatever the Data-Out block holds (SBC-4 §5.50);
        // on a fully provisioned LU the bit is ignored and the data written.
        let zero = (unmap && thin) || block.iter().all(|&b| b == 0);
        let off = lba * bs;
        let len = count * bs;
        let sync = self.must_sync(false);
        if let Some(a) = self.lu.cfg.backend.aio() {
            // Backends with their own write-same and write-zeroes (RBD):
            // zeros are written as zeros (deallocating where the store
            // can), never as a discard that may leave data (LBPRZ 0).
            let f = if block.iter().all(|&b| b == 0) {
                a.write_zeroes(off, len)
            } else {
                a.write_same(off, len, block)
            };
            self.awaited(IoDir::Write, f).await?;
            if sync {
                self.awaited(IoDir::Write, a.flush()).await?;
            }
            return Ok(Bytes::new());
        }
        self.blocking(IoDir::Write, move |b| {
            if zero && (unmap || thin) && b.supports_unmap() && b.unmap_reads_zero() {
                // LBPRZ = 1: deallocated blocks read as zeros.
                b.punch_hole(off, len)?;
            } else if zero {
                b.write_zeroes(off, len)?;
            } else {
                const CHUNK_BLOCKS: u64 = 2048;
                let per = CHUNK_BLOCKS.min(count) as usize;
                let mut pattern = Vec::with_capacity(per * bs as usize);
                for _ in 0..per {
                    pattern.extend_from_slice(&block);
                }
                let mut done = 0u64;
                while done < count {
                    let k = (count - done).min(per as u64);
                    b.write_at(&pattern[..(k * bs) as usize], off + done * bs)?;
                    done += k;
                }
            }
            if sync {
                b.flush_range(off, len)?;
            }
            Ok(())
        })
        .await?;
        Ok(Bytes::new())
    }

    pub(super) async fn unmap(&self, param_len: u16) -> R {
        self.check_writable()?;
        if !self.lu.thin() {
            return Err(Sense::illegal_request(Asc::INVALID_COMMAND_OPERATION_CODE)
                .with_field_pointer(true, 0, None)
                .into());
        }
        if param_len == 0 {
            return Ok(Bytes::new());
        }
        // SBC-4 §5.32.1: a parameter list shorter than the header is a
        // PARAMETER LIST LENGTH ERROR.
        if param_len < 8 {
            return Err(param_list_length_error());
        }
        let data = self.data_out(param_len as u64)?;
        let ranges = cdb::parse_unmap_params(&data).map_err(|e| invalid_param(e.byte, None))?;
        let l = &self.srv.limits;
        if ranges.len() as u64 > l.max_unmap_descriptors as u64 {
            return Err(invalid_param(2, None));
        }
        let n = self.lu.num_blocks();
        for (i, (lba, count)) in ranges.iter().enumerate() {
            if lba.checked_add(*count as u64).is_none_or(|e| e > n) {
                return Err(Sense::illegal_request(Asc::LBA_OUT_OF_RANGE).into());
            }
            if *count > l.max_unmap_lba_count {
                return Err(invalid_param((8 + i * 16 + 8) as u16, None));
            }
        }
        let bs = self.bs();
        for (lba, count) in ranges {
            if count == 0 {
                continue;
            }
            let _g = self.lu.locks.lock(lba, lba + count as u64).await;
            if let Some(a) = self.lu.cfg.backend.aio() {
                let f = a.discard(lba * bs, count as u64 * bs);
                self.awaited(IoDir::Write, f).await?;
                continue;
            }
            self.blocking(IoDir::Write, move |b| {
                b.punch_hole(lba * bs, count as u64 * bs)
            })
            .await?;
        }
        Ok(Bytes::new())
    }

    pub(super) async fn get_lba_status(&self, lba: u64, alloc_len: u32) -> R {
        let n = self.lu.num_blocks();
        if lba >= n {
            return Err(Sense::illegal_request(Asc::LBA_OUT_OF_RANGE).into());
        }
        let bs = self.bs();
        let thin = self.lu.thin();
        // Room for this many descriptors in the allocation length (at least one).
        let max_desc = ((alloc_len as usize).saturating_sub(8) / 16).clamp(1, 64);
        let descs = self
            .blocking(IoDir::Read, move |b| {
                let mut v = Vec::new();
                let mut pos = lba;
                while pos < n && v.len() < max_desc {
                    if !thin {
                        v.push((
                            pos,
                            (n - pos).min(u32::MAX as u64) as u32,
                            inq::lba_status::MAPPED,
                        ));
                        break;
                    }
                    let off = pos * bs;
                    let data = b.seek_data(off)?;
                    let (end, status) = match data {
                        Some(d) if d / bs <= pos => {
                            let hole = b.seek_hole(off)?;
                            (hole.div_ceil(bs).max(pos + 1), inq::lba_status::MAPPED)
                        }
                        Some(d) => (d / bs, inq::lba_status::DEALLOCATED),
                        None => (n, inq::lba_status::DEALLOCATED),
                    };
                    let end = end.min(n);
                    let count = (end - pos).min(u32::MAX as u64);
                    v.push((pos, count as u32, status));
                    pos += count;
                }
                Ok(v)
            })
            .await?;
        Ok(truncate(inq::encode_lba_status(&descs), alloc_len as usize))
    }
}
