//! Storage backends behind one small trait.
//!
//! All I/O is positional (`read_at` / `write_at` with an explicit offset) so
//! that many SCSI commands run concurrently on one backend without a lock on
//! the data path. Calls block: the device server runs them on tokio's
//! blocking pool. Capability methods (`supports_unmap`, `seek_data`, ...)
//! feed the Logical Block Provisioning VPD page and GET LBA STATUS.
//!
//! Backends with completion-based I/O of their own (librbd's aio) also
//! offer [`AsyncIo`] through [`Backend::aio`]: the device server then
//! awaits their futures instead of occupying a blocking-pool thread per
//! request.
//!
//! Implementations: [`FileBackend`] (regular file, sparse when thin),
//! [`BlockBackend`] (block device), [`MemoryBackend`] (sparse chunked RAM),
//! [`NullBackend`] (reads zeros, discards writes), `RbdBackend` (a Ceph RBD
//! image, cargo feature `rbd`).
//!
//! [`BackendError::sense`] is the one place where backend failures become
//! SCSI sense data.

mod block;
mod file;
mod memory;
mod null;
#[cfg(feature = "rbd")]
pub mod rbd;

pub use block::BlockBackend;
pub use file::{FileBackend, FileOptions};
pub use memory::MemoryBackend;
pub use null::NullBackend;

use bytes::Bytes;
use proto::scsi::{Asc, Sense, SenseKey};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// Errors from a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("access beyond the end of the backing store")]
    OutOfRange,
    #[error("operation not supported by this backend")]
    Unsupported,
    #[error("backend is read-only")]
    ReadOnly,
    /// The storage did not answer in time or lost its connection (a Ceph
    /// cluster with an OSD or monitor down): the command may succeed if
    /// retried later.
    #[error("backing store unavailable: {0}")]
    Unavailable(String),
}

/// ASC/ASCQ 3Eh/02h TIMEOUT ON LOGICAL UNIT (SPC-5 Annex D).
const TIMEOUT_ON_LOGICAL_UNIT: Asc = Asc::new(0x3E, 0x02);

/// Direction of the failed operation, to pick the medium error ASC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDir {
    Read,
    Write,
}

impl BackendError {
    /// SCSI sense for this error (SBC-4 §4.18 error reporting).
    pub fn sense(&self, dir: IoDir) -> Sense {
        match self {
            BackendError::Io(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // SBC-4 §4.7.3.6: SPACE ALLOCATION FAILED WRITE PROTECT.
                Sense::new(SenseKey::DATA_PROTECT, Asc::new(0x27, 0x07))
            }
            // SAM-5 §5.3.2 / SPC-5 §4.4.3: ABORTED COMMAND, "the
            // application client may be able to recover by trying the
            // command again" (Linux sd and libiscsi-based initiators do).
            BackendError::Unavailable(_) => {
                Sense::new(SenseKey::ABORTED_COMMAND, TIMEOUT_ON_LOGICAL_UNIT)
            }
            BackendError::Io(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                Sense::new(SenseKey::ABORTED_COMMAND, TIMEOUT_ON_LOGICAL_UNIT)
            }
            BackendError::Io(e) if e.raw_os_error() == Some(libc::EROFS) => {
                Sense::new(SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED)
            }
            BackendError::Io(_) => match dir {
                IoDir::Read => Sense::new(SenseKey::MEDIUM_ERROR, Asc::UNRECOVERED_READ_ERROR),
                IoDir::Write => Sense::new(SenseKey::MEDIUM_ERROR, Asc::WRITE_ERROR),
            },
            BackendError::OutOfRange => Sense::illegal_request(Asc::LBA_OUT_OF_RANGE),
            BackendError::Unsupported => Sense::illegal_request(Asc::INVALID_FIELD_IN_CDB),
            BackendError::ReadOnly => Sense::new(SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED),
        }
    }
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// A backend operation in flight (owns everything it needs).
pub type IoFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'static>>;

/// Completion-based data path of a backend (librbd's aio): each call starts
/// the operation at once and returns a future of its completion. Offsets
/// and lengths are bytes, inside `size()`.
pub trait AsyncIo: Send + Sync {
    fn read(&self, offset: u64, len: usize) -> IoFuture<Bytes>;
    fn write(&self, offset: u64, data: Bytes) -> IoFuture<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> IoFuture<()>;
    /// Deallocates a range (UNMAP); may leave data where the store's
    /// granularity is coarser ([`Backend::unmap_reads_zero`]).
    fn discard(&self, offset: u64, len: u64) -> IoFuture<()>;
    /// Writes zeros (deallocating where the store can).
    fn write_zeroes(&self, offset: u64, len: u64) -> IoFuture<()>;
    /// Writes `block` repeated over `len` bytes.
    fn write_same(&self, offset: u64, len: u64, block: Bytes) -> IoFuture<()>;
    /// Atomically compares `expected` with the medium and, when equal,
    /// writes `data`: `Ok(None)` written, `Ok(Some(i))` first differing
    /// byte, nothing written. [`BackendError::Unsupported`] when the store
    /// cannot do it for this range (the caller then uses its own lock).
    fn compare_and_write(&self, offset: u64, expected: Bytes, data: Bytes)
        -> IoFuture<Option<u64>>;
}

/// A byte-addressed store. Offsets and lengths are in bytes; the device
/// server only issues block-aligned requests inside `size()`.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Short name for logs and the admin API ("file", "block", ...).
    fn kind(&self) -> &'static str;

    /// Current size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from `offset`. Bytes the store does not hold read as 0.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;

    /// Reads like [`Backend::read_at`] if that needs no wait for storage
    /// (RAM, a page-cache hit); `None` when it would have to wait, and the
    /// caller then calls `read_at` where blocking is allowed (tokio's
    /// blocking pool). Lets the device server answer a cached read on the
    /// connection's task, without a thread hop. Default: never.
    fn read_now(&self, _buf: &mut [u8], _offset: u64) -> Option<Result<()>> {
        None
    }

    /// Writes like [`Backend::write_at`] if that needs no wait for storage
    /// (RAM, room in the page cache); `None` when it would have to wait.
    /// After `None` part of `buf` may be written: the caller writes all of
    /// it again with `write_at`. Default: never.
    fn write_now(&self, _buf: &[u8], _offset: u64) -> Option<Result<()>> {
        None
    }

    /// Makes every completed write durable (fdatasync).
    fn flush(&self) -> Result<()>;

    /// Makes writes in a range durable. Defaults to a full flush.
    fn flush_range(&self, _offset: u64, _len: u64) -> Result<()> {
        self.flush()
    }

    /// Whether `punch_hole` deallocates storage (thin provisioning).
    fn supports_unmap(&self) -> bool {
        false
    }

    /// Deallocates a range; it then reads as zeros.
    fn punch_hole(&self, _offset: u64, _len: u64) -> Result<()> {
        Err(BackendError::Unsupported)
    }

    /// Writes zeros over a range (allocation unchanged when possible).
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// The first offset >= `offset` holding data, or `None` if only holes
    /// follow. Fully provisioned stores report data everywhere.
    fn seek_data(&self, offset: u64) -> Result<Option<u64>> {
        Ok((offset < self.size()).then_some(offset))
    }

    /// The first offset >= `offset` inside a hole (`size()` if none).
    fn seek_hole(&self, _offset: u64) -> Result<u64> {
        Ok(self.size())
    }

    /// Changes the size (new space reads as zeros).
    fn resize(&self, _new_size: u64) -> Result<()> {
        Err(BackendError::Unsupported)
    }

    /// The asynchronous data path, when the backend has one.
    fn aio(&self) -> Option<&dyn AsyncIo> {
        None
    }

    /// Bytes below which `punch_hole` may leave a range allocated (0: any
    /// block is deallocated). Feeds the Block Limits VPD page.
    fn unmap_granularity(&self) -> u64 {
        0
    }

    /// Whether deallocated blocks read as zeros (LBPRZ, SBC-4 §4.7.3.3).
    fn unmap_reads_zero(&self) -> bool {
        true
    }

    /// Backend-specific facts for the admin API (`target show`).
    fn info(&self) -> Option<serde_json::Value> {
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Behaviour every backend must show; run against each implementation.
    pub(crate) fn exercise(b: &dyn Backend, thin: bool) {
        let size = b.size();
        assert!(size >= 1 << 20);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
        b.write_at(&data, 4096).unwrap();
        let mut back = vec![0u8; 8192];
        b.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
        // Unwritten space reads as zeros.
        let mut z = vec![0xAAu8; 4096];
        b.read_at(&mut z, size - 4096).unwrap();
        assert!(z.iter().all(|&x| x == 0));
        // Zeroing.
        b.write_zeroes(4096, 4096).unwrap();
        b.read_at(&mut back, 4096).unwrap();
        assert!(back[..4096].iter().all(|&x| x == 0));
        assert_eq!(&back[4096..], &data[4096..]);
        b.flush().unwrap();
        if thin {
            assert!(b.supports_unmap());
            b.punch_hole(0, 1 << 20).unwrap();
            b.read_at(&mut back, 4096).unwrap();
            assert!(back.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn sense_mapping() {
        let e = BackendError::Io(std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.sense(IoDir::Read).key, SenseKey::MEDIUM_ERROR);
        assert_eq!(e.sense(IoDir::Write).asc, Asc::WRITE_ERROR);
        let e = BackendError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.sense(IoDir::Write).key, SenseKey::DATA_PROTECT);
        assert_eq!(
            BackendError::ReadOnly.sense(IoDir::Write).asc,
            Asc::WRITE_PROTECTED
        );
        assert_eq!(
            BackendError::OutOfRange.sense(IoDir::Read).asc,
            Asc::LBA_OUT_OF_RANGE
        );
    }
}
