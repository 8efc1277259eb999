//! SBC-4 data commands: READ and WRITE (6/10/12/16, SBC-4 §5.11-§5.14,
//! §5.40-§5.43), VERIFY and WRITE AND VERIFY (§5.34, §5.46), COMPARE AND
//! WRITE (§5.3), ORWRITE (§5.10) and WRITE ATOMIC (§5.47).

use super::{invalid_cdb, Ctx, Fail, R};
use crate::backend::{BackendError, IoDir};
use bytes::Bytes;
use proto::scsi::cdb::{CdbSize, Rw};
use proto::scsi::{Asc, Sense, SenseKey};

impl Ctx<'_> {
    pub(super) async fn read(&self, size: CdbSize, rw: Rw) -> R {
        self.check_range(size, rw.lba, rw.blocks, false)?;
        self.check_transfer(size, rw.blocks)?;
        self.read_blocks(rw.lba, rw.blocks).await
    }

    pub(super) async fn write(&self, size: CdbSize, rw: Rw) -> R {
        self.check_range(size, rw.lba, rw.blocks, false)?;
        self.check_writable()?;
        self.check_transfer(size, rw.blocks)?;
        let data = self.data_out(rw.blocks as u64 * self.bs())?;
        let _g = self.lu.locks.lock(rw.lba, rw.lba + rw.blocks as u64).await;
        self.write_blocks(rw.lba, data, rw.fua).await?;
        Ok(Bytes::new())
    }

    /// Compares `expected` with the medium at `lba`: MISCOMPARE with the
    /// offset of the first differing byte in INFORMATION (SBC-4 §5.34).
    pub(super) async fn compare(
        &self,
        lba: u64,
        blocks: u32,
        expected: &[u8],
        asc: Asc,
    ) -> Result<(), Fail> {
        let medium = self.read_blocks(lba, blocks).await?;
        if let Some(i) = medium.iter().zip(expected.iter()).position(|(a, b)| a != b) {
            return Err(Sense::new(SenseKey::MISCOMPARE, asc)
                .with_information(i as u64)
                .into());
        }
        Ok(())
    }

    pub(super) async fn verify(&self, size: CdbSize, rw: Rw, bytchk: u8) -> R {
        self.check_range(size, rw.lba, rw.blocks, false)?;
        self.check_transfer(size, rw.blocks)?;
        match bytchk {
            0 => {
                // Medium verification: read it.
                self.read_blocks(rw.lba, rw.blocks).await?;
            }
            1 => {
                let data = self.data_out(rw.blocks as u64 * self.bs())?;
                self.compare(rw.lba, rw.blocks, &data, Asc::MISCOMPARE_DURING_VERIFY)
                    .await?;
            }
            3 => {
                if rw.blocks > 0 {
                    let one = self.data_out(self.bs())?;
                    let expected: Vec<u8> = one
                        .iter()
                        .copied()
                        .cycle()
                        .take(rw.blocks as usize * self.bs() as usize)
                        .collect();
                    self.compare(rw.lba, rw.blocks, &expected, Asc::MISCOMPARE_DURING_VERIFY)
                        .await?;
                }
            }
            _ => return Err(invalid_cdb(1, Some(2))),
        }
        Ok(Bytes::new())
    }

    pub(super) async fn write_and_verify(&self, size: CdbSize, rw: Rw, bytchk: u8) -> R {
        if bytchk > 1 {
            return Err(invalid_cdb(1, Some(2)));
        }
        self.check_range(size, rw.lba, rw.blocks, false)?;
        self.check_writable()?;
        self.check_transfer(size, rw.blocks)?;
        let data = self.data_out(rw.blocks as u64 * self.bs())?;
        let _g = self.lu.locks.lock(rw.lba, rw.lba + rw.blocks as u64).await;
        // The verification step reads back from stable storage: flush.
        self.write_blocks(rw.lba, data.clone(), true).await?;
        if bytchk == 1 {
            self.compare(rw.lba, rw.blocks, &data, Asc::MISCOMPARE_DURING_VERIFY)
                .await?;
        }
        Ok(Bytes::new())
    }

    pub(super) async fn compare_and_write(&self, rw: Rw) -> R {
        self.check_writable()?;
        if rw.blocks == 0 {
            // SBC-4 §5.3: 0 blocks is not an error; nothing is compared.
            // Data-Out sent anyway disagrees with the CDB.
            if !self.req.data_out.is_empty() {
                return Err(invalid_cdb(13, None));
            }
            self.check_range(CdbSize::Sixteen, rw.lba, 0, false)?;
            return Ok(Bytes::new());
        }
        if rw.blocks > self.srv.limits.max_compare_and_write as u32 {
            return Err(invalid_cdb(13, None));
        }
        self.check_range(CdbSize::Sixteen, rw.lba, rw.blocks, false)?;
        let len = rw.blocks as u64 * self.bs();
        let d = &self.req.data_out;
        if d.len() as u64 != 2 * len {
            return Err(invalid_cdb(13, None));
        }
        let (verify, write) = (d.slice(..len as usize), d.slice(len as usize..));
        let _g = self.lu.locks.lock(rw.lba, rw.lba + rw.blocks as u64).await;
        if let Some(a) = self.lu.cfg.backend.aio() {
            // Atomic in the store itself (RBD: on the cluster, against
            // other gateways too); Unsupported falls back to the lock.
            let off = rw.lba * self.bs();
            match a
                .compare_and_write(off, verify.clone(), write.clone())
                .await
            {
                Ok(None) => {
                    if self.must_sync(rw.fua) {
                        self.flush().await?;
                    }
                    return Ok(Bytes::new());
                }
                Ok(Some(i)) => {
                    return Err(
                        Sense::new(SenseKey::MISCOMPARE, Asc::MISCOMPARE_DURING_VERIFY)
                            .with_information(i)
                            .into(),
                    )
                }
                Err(BackendError::Unsupported) => {}
                Err(e) => return Err(e.sense(IoDir::Write).into()),
            }
        }
        self.compare(rw.lba, rw.blocks, &verify, Asc::MISCOMPARE_DURING_VERIFY)
            .await?;
        self.write_blocks(rw.lba, write, rw.fua).await?;
        Ok(Bytes::new())
    }

    pub(super) async fn or_write(&self, rw: Rw) -> R {
        self.check_range(CdbSize::Sixteen, rw.lba, rw.blocks, false)?;
        self.check_writable()?;
        self.check_transfer(CdbSize::Sixteen, rw.blocks)?;
        let data = self.data_out(rw.blocks as u64 * self.bs())?;
        if data.is_empty() {
            return Ok(Bytes::new());
        }
        let _g = self.lu.locks.lock(rw.lba, rw.lba + rw.blocks as u64).await;
        let cur = self.read_blocks(rw.lba, rw.blocks).await?;
        let merged: Vec<u8> = cur.iter().zip(data.iter()).map(|(a, b)| a | b).collect();
        self.write_blocks(rw.lba, Bytes::from(merged), rw.fua)
            .await?;
        Ok(Bytes::new())
    }

    pub(super) async fn write_atomic(&self, rw: Rw, boundary: u16) -> R {
        if boundary != 0 {
            // MAXIMUM ATOMIC BOUNDARY SIZE is 0.
            return Err(invalid_cdb(10, None));
        }
        self.check_range(CdbSize::Sixteen, rw.lba, rw.blocks, false)?;
        self.check_writable()?;
        self.check_transfer(CdbSize::Sixteen, rw.blocks)?;
        let data = self.data_out(rw.blocks as u64 * self.bs())?;
        // Atomic with respect to every other write through the range lock.
        let _g = self.lu.locks.lock(rw.lba, rw.lba + rw.blocks as u64).await;
        self.write_blocks(rw.lba, data, rw.fua).await?;
        Ok(Bytes::new())
    }
}
