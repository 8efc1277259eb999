//! What the executors share: the LBA-range, transfer-length and
//! write-protect checks (SBC-4 §4.5, §5), the Data-Out accessor, and the
//! backend I/O helpers (blocking pool or the backend's own async path).

use super::*;

/// Largest read or write tried on the caller's task (`Backend::read_now`,
/// `write_now`): a copy of this size takes tens of microseconds, short
/// enough not to hold up the other connections of a runtime thread.
const INLINE_MAX: usize = 1 << 20;

/// A backend failure as the command's answer.
fn backend_failed(dir: IoDir, e: BackendError) -> Fail {
    tracing::warn!(error = %e, "backend I/O failed");
    e.sense(dir).into()
}

impl Ctx<'_> {
    /// SBC-4 §4.5: LBA range check; `zero_means_to_end` for SYNCHRONIZE
    /// CACHE / PRE-FETCH where 0 blocks means "through the last LBA".
    pub(super) fn check_range(
        &self,
        _size: CdbSize,
        lba: u64,
        blocks: u32,
        _zero_means_to_end: bool,
    ) -> Result<(), Fail> {
        let n = self.lu.num_blocks();
        if lba >= n || lba.checked_add(blocks as u64).is_none_or(|e| e > n) {
            return Err(Sense::illegal_request(Asc::LBA_OUT_OF_RANGE).into());
        }
        Ok(())
    }

    pub(super) fn check_transfer(&self, size: CdbSize, blocks: u32) -> Result<(), Fail> {
        let max = self.srv.limits.max_transfer_bytes as u64 / self.bs();
        if blocks as u64 > max {
            let byte = match size {
                CdbSize::Six => 4,
                CdbSize::Ten => 7,
                CdbSize::Twelve => 6,
                CdbSize::Sixteen => 10,
            };
            return Err(invalid_cdb(byte, None));
        }
        Ok(())
    }

    pub(super) fn check_writable(&self) -> Result<(), Fail> {
        let st = self.lu.state();
        if st.mode == IoMode::ReadOnly || st.modes.swp {
            return Err(write_protected());
        }
        Ok(())
    }

    /// The first `needed` bytes of Data-Out. `transfer::plan` has already
    /// refused short Data-Out (INVALID FIELD IN COMMAND INFORMATION UNIT,
    /// SAM-5 §5.4.3); this keeps an executor from ever reading past it.
    pub(super) fn data_out(&self, needed: u64) -> Result<Bytes, Fail> {
        let d = &self.req.data_out;
        if (d.len() as u64) < needed {
            return Err(
                Sense::illegal_request(Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT).into(),
            );
        }
        Ok(d.slice(..needed as usize))
    }

    /// Write durability per mode: write-through (or WCE = 0) and FUA writes
    /// are flushed before status.
    pub(super) fn must_sync(&self, fua: bool) -> bool {
        let st = self.lu.state();
        fua || st.mode == IoMode::WriteThrough || !st.modes.wce
    }

    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        dir: IoDir,
        f: impl FnOnce(&dyn crate::backend::Backend) -> Result<T, BackendError> + Send + 'static,
    ) -> Result<T, Fail> {
        let be = self.lu.cfg.backend.clone();
        match tokio::task::spawn_blocking(move || f(be.as_ref())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(backend_failed(dir, e)),
            Err(_) => {
                Err(Sense::new(SenseKey::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE).into())
            }
        }
    }

    /// Awaits an operation of the backend's asynchronous data path
    /// ([`crate::backend::AsyncIo`]), mapping its error to sense data.
    pub(super) async fn awaited<T>(
        &self,
        dir: IoDir,
        f: crate::backend::IoFuture<T>,
    ) -> Result<T, Fail> {
        f.await.map_err(|e| backend_failed(dir, e))
    }

    pub(super) async fn read_blocks(&self, lba: u64, blocks: u32) -> R {
        let bs = self.bs();
        let len = blocks as usize * bs as usize;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let off = lba * bs;
        let be = &self.lu.cfg.backend;
        if let Some(a) = be.aio() {
            return self.awaited(IoDir::Read, a.read(off, len)).await;
        }
        let mut buf = BytesMut::zeroed(len);
        if len <= INLINE_MAX {
            // RAM or a page-cache hit: no trip to the blocking pool.
            match be.read_now(&mut buf, off) {
                Some(Ok(())) => return Ok(buf.freeze()),
                Some(Err(e)) => return Err(backend_failed(IoDir::Read, e)),
                None => {}
            }
        }
        let buf = self
            .blocking(IoDir::Read, move |b| {
                b.read_at(&mut buf, off)?;
                Ok(buf)
            })
            .await?;
        Ok(buf.freeze())
    }

    pub(super) async fn write_blocks(&self, lba: u64, data: Bytes, fua: bool) -> Result<(), Fail> {
        if data.is_empty() {
            return Ok(());
        }
        let off = lba * self.bs();
        let len = data.len() as u64;
        let sync = self.must_sync(fua);
        if !sync && data.len() <= INLINE_MAX {
            // RAM or room in the page cache: no trip to the blocking pool.
            match self.lu.cfg.backend.write_now(&data, off) {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => return Err(backend_failed(IoDir::Write, e)),
                None => {}
            }
        }
        if let Some(a) = self.lu.cfg.backend.aio() {
            self.awaited(IoDir::Write, a.write(off, data)).await?;
            if sync {
                self.awaited(IoDir::Write, a.flush()).await?;
            }
            return Ok(());
        }
        self.blocking(IoDir::Write, move |b| {
            b.write_at(&data, off)?;
            if sync {
                b.flush_range(off, len)?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn flush(&self) -> Result<(), Fail> {
        if let Some(a) = self.lu.cfg.backend.aio() {
            return self.awaited(IoDir::Write, a.flush()).await;
        }
        self.blocking(IoDir::Write, |b| b.flush()).await
    }
}
