//! Block-device backend. Opens the device with O_DIRECT when asked and
//! possible (falling back to buffered I/O, e.g. on some loop devices), gets
//! its size with the BLKGETSIZE64 ioctl, discards with BLKDISCARD and zeroes
//! with BLKZEROOUT. O_DIRECT needs aligned memory: requests go through an
//! aligned bounce buffer in that mode.

use super::{Backend, BackendError, Result};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127F;
const ALIGN: usize = 4096;

#[derive(Debug)]
pub struct BlockBackend {
    file: File,
    size: AtomicU64,
    direct: bool,
    read_only: bool,
}

/// A heap buffer aligned for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    fn new(len: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len.max(ALIGN).next_multiple_of(ALIGN), ALIGN).ok()?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Self { ptr, layout })
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live allocation of layout.size() bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn ioctl_range(fd: i32, req: libc::c_ulong, offset: u64, len: u64) -> std::io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: the ioctl reads two u64 from a valid pointer.
    let r = unsafe { libc::ioctl(fd, req as _, range.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl BlockBackend {
    pub fn open(path: impl AsRef<Path>, direct: bool, read_only: bool) -> Result<Self> {
        let path = path.as_ref();
        let open = |flags: i32| {
            let mut oo = OpenOptions::new();
            oo.read(true).write(!read_only).custom_flags(flags);
            oo.open(path)
        };
        let (file, direct) = if direct {
            match open(libc::O_DIRECT) {
                Ok(f) => (f, true),
                Err(_) => (open(0)?, false),
            }
        } else {
            (open(0)?, false)
        };
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 to a valid pointer.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
        if r != 0 {
            // Not a block device (e.g. a regular file in tests): use its length.
            size = file.metadata()?.len();
        }
        Ok(Self {
            file,
            size: AtomicU64::new(size),
            direct,
            read_only,
        })
    }

    fn aligned(&self, offset: u64, len: usize) -> bool {
        offset.is_multiple_of(ALIGN as u64) && len.is_multiple_of(ALIGN)
    }
}

impl Backend for BlockBackend {
    fn kind(&self) -> &'static str {
        "block"
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if !self.direct {
            self.file.read_exact_at(buf, offset)?;
            return Ok(());
        }
        // O_DIRECT: read the covering aligned span into a bounce buffer.
        let start = offset - offset % ALIGN as u64;
        let end = (offset + buf.len() as u64).next_multiple_of(ALIGN as u64);
        let mut b = Aligned::new((end - start) as usize)
            .ok_or(BackendError::Io(std::io::ErrorKind::OutOfMemory.into()))?;
        let span = &mut b.as_mut()[..(end - start) as usize];
        self.file.read_exact_at(span, start)?;
        let s = (offset - start) as usize;
        buf.copy_from_slice(&span[s..s + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        if !self.direct {
            self.file.write_all_at(buf, offset)?;
            return Ok(());
        }
        if !self.aligned(offset, buf.len()) {
            // Read-modify-write of the covering span (512-byte LUNs).
            let start = offset - offset % ALIGN as u64;
            let end = (offset + buf.len() as u64).next_multiple_of(ALIGN as u64);
            let mut b = Aligned::new((end - start) as usize)
                .ok_or(BackendError::Io(std::io::ErrorKind::OutOfMemory.into()))?;
            let span = &mut b.as_mut()[..(end - start) as usize];
            self.file.read_exact_at(span, start)?;
            let s = (offset - start) as usize;
            span[s..s + buf.len()].copy_from_slice(buf);
            self.file.write_all_at(span, start)?;
            return Ok(());
        }
        let mut b = Aligned::new(buf.len())
            .ok_or(BackendError::Io(std::io::ErrorKind::OutOfMemory.into()))?;
        let span = &mut b.as_mut()[..buf.len()];
        span.copy_from_slice(buf);
        self.file.write_all_at(span, offset)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }

    fn supports_unmap(&self) -> bool {
        !self.read_only
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        match ioctl_range(self.file.as_raw_fd(), BLKDISCARD, offset, len) {
            Ok(()) => Ok(()),
            Err(_) => self.write_zeroes(offset, len),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        if len == 0 {
            return Ok(());
        }
        if ioctl_range(self.file.as_raw_fd(), BLKZEROOUT, offset, len).is_ok() {
            return Ok(());
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_as_block_device() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blk");
        std::fs::File::create(&p).unwrap().set_len(2 << 20).unwrap();
        let b = BlockBackend::open(&p, false, false).unwrap();
        assert_eq!(b.size(), 2 << 20);
        super::super::tests::exercise(&b, false);
        // O_DIRECT may be unavailable on the test filesystem: either way
        // unaligned I/O must work.
        let d = BlockBackend::open(&p, true, false).unwrap();
        d.write_at(&[3u8; 512], 512).unwrap();
        let mut buf = [0u8; 1024];
        d.read_at(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&x| x == 0));
        assert!(buf[512..].iter().all(|&x| x == 3));
    }
}
