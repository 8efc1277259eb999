//! Medium and maintenance commands: START STOP UNIT (SBC-4 §5.31) and
//! SANITIZE (SBC-4 §5.30).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use super::{invalid_cdb, invalid_param, Ctx, Fail, R};
use crate::backend::{Backend, BackendError, IoDir};
use bytes::Bytes;
use proto::scsi::cdb::sa;
use proto::scsi::{Asc, Sense, SenseKey};

/// The work of one SANITIZE, run on the blocking pool.
type SanitizeJob = Box<dyn FnOnce(&dyn Backend) -> Result<(), BackendError> + Send>;

impl Ctx<'_> {
    pub(super) async fn start_stop(&self, power_condition: u8, loej: bool, start: bool) -> R {
        if power_condition != 0 {
            // Power conditions are accepted and have no effect here.
            return Ok(Bytes::new());
        }
        if loej && self.lu.cfg.removable {
            let mut st = self.lu.state();
            // SBC-4 §5.25: while removal is prevented neither eject nor
            // load (LOEJ = 1) may proceed.
            if !st.prevent.is_empty() {
                return Err(Sense::illegal_request(Asc::MEDIUM_REMOVAL_PREVENTED).into());
            }
            st.medium_present = start;
            return Ok(Bytes::new());
        }
        if !start {
            // Stopping flushes the cache (unless NO_FLUSH); the unit stays
            // ready because it has no spindle to stop.
            self.flush().await?;
        }
        Ok(Bytes::new())
    }

    /// SANITIZE (SBC-4 §5.30): OVERWRITE with a pattern, BLOCK ERASE and
    /// CRYPTOGRAPHIC ERASE (both deallocate / zero every block), EXIT
    /// FAILURE MODE. While it runs, other commands get NOT READY, SANITIZE
    /// IN PROGRESS; it cannot be aborted (it runs on the blocking pool and
    /// clears the state itself). IMMED = 1 returns status at once.
    pub(super) async fn sanitize(
        &self,
        service_action: u8,
        param_len: u16,
        _ause: bool,
        immed: bool,
    ) -> R {
        self.check_writable()?;
        let size = self.lu.num_blocks() * self.bs();
        let job: SanitizeJob = match service_action as u16 {
            sa::SANITIZE_OVERWRITE => self.overwrite_job(param_len, size)?,
            sa::SANITIZE_BLOCK_ERASE | sa::SANITIZE_CRYPTO_ERASE => {
                if param_len != 0 {
                    return Err(invalid_cdb(7, None));
                }
                Box::new(move |b| erase(b, size))
            }
            sa::SANITIZE_EXIT_FAILURE_MODE => {
                if param_len != 0 {
                    return Err(invalid_cdb(7, None));
                }
                return Ok(Bytes::new());
            }
            _ => return Err(invalid_cdb(1, Some(4))),
        };
        self.run_sanitize(job, immed).await
    }

    /// The OVERWRITE job for the parameter list of `param_len` bytes
    /// (SBC-4 §5.30.3: a 4-byte header, then a pattern of 1..=block size
    /// bytes), over `size` bytes.
    fn overwrite_job(&self, param_len: u16, size: u64) -> Result<SanitizeJob, Fail> {
        let bs = self.bs();
        if param_len < 5 || param_len as u64 > bs + 4 {
            return Err(invalid_cdb(7, None));
        }
        let p = self.data_out(param_len as u64)?;
        let pat_len = u16::from_be_bytes([p[2], p[3]]) as u64;
        let count = p[0] & 0x1F;
        if count == 0 {
            return Err(invalid_param(0, Some(4)));
        }
        if p[1] != 0 {
            return Err(invalid_param(1, None));
        }
        if pat_len == 0 || pat_len > bs || pat_len + 4 != param_len as u64 {
            return Err(invalid_param(2, None));
        }
        let pass = Overwrite {
            pattern: p.slice(4..),
            invert: p[0] & 0x80 != 0,
            count,
            size,
            progress: self.lu.state().sanitize_progress.clone(),
        };
        Ok(Box::new(move |b| pass.run(b)))
    }

    /// Mark the unit as sanitizing and run `job` on the blocking pool; the
    /// job clears the mark when it ends. With IMMED, status returns at once.
    async fn run_sanitize(&self, job: SanitizeJob, immed: bool) -> R {
        {
            let mut st = self.lu.state();
            if st.sanitizing {
                return Err(st.sanitize_in_progress().into());
            }
            st.sanitizing = true;
            st.sanitize_progress.store(0, Ordering::Relaxed);
        }
        let lu = self.lu.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let r = job(lu.cfg.backend.as_ref());
            lu.state().sanitizing = false;
            r
        });
        if immed {
            return Ok(Bytes::new());
        }
        match handle.await {
            Ok(Ok(())) => Ok(Bytes::new()),
            Ok(Err(e)) => Err(e.sense(IoDir::Write).into()),
            Err(_) => {
                Err(Sense::new(SenseKey::HARDWARE_ERROR, Asc::INTERNAL_TARGET_FAILURE).into())
            }
        }
    }
}

/// BLOCK ERASE / CRYPTOGRAPHIC ERASE: every block deallocated (or zeroed
/// where the backend cannot deallocate).
fn erase(b: &dyn Backend, size: u64) -> Result<(), BackendError> {
    if b.supports_unmap() {
        b.punch_hole(0, size)?;
    } else {
        b.write_zeroes(0, size)?;
    }
    b.flush()
}

/// One SANITIZE OVERWRITE: `count` passes of `pattern` over `size` bytes,
/// inverted between passes with INVERT (SBC-4 §5.30.3), reporting
/// progress in 1/65536ths for REQUEST SENSE.
struct Overwrite {
    pattern: Bytes,
    invert: bool,
    count: u8,
    size: u64,
    progress: Arc<AtomicU16>,
}

impl Overwrite {
    fn run(self, b: &dyn Backend) -> Result<(), BackendError> {
        const CHUNK: u64 = 1 << 20;
        let total = (self.size * self.count as u64).max(1);
        let mut buf: Vec<u8> = self
            .pattern
            .iter()
            .copied()
            .cycle()
            .take(CHUNK as usize)
            .collect();
        for pass in 0..self.count {
            if self.invert && pass > 0 {
                buf.iter_mut().for_each(|x| *x = !*x);
            }
            let mut off = 0;
            while off < self.size {
                let n = CHUNK.min(self.size - off);
                b.write_at(&buf[..n as usize], off)?;
                off += n;
                let done = pass as u64 * self.size + off;
                let p = (done.saturating_mul(65536) / total).min(65535) as u16;
                self.progress.store(p, Ordering::Relaxed);
            }
        }
        b.flush()
    }
}
