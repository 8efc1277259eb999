//! Regular-file backend: pread/pwrite through `FileExt`, sparse files when
//! thin (holes punched with `fallocate(PUNCH_HOLE)`), SEEK_DATA/SEEK_HOLE
//! for GET LBA STATUS, and write-through via O_DSYNC.
//!
//! Reads and writes that need not wait for the disk are offered to the
//! device server's fast path ([`Backend::read_now`], [`Backend::write_now`]):
//! `preadv2`/`pwritev2` with `RWF_NOWAIT` (Linux 4.14+: served from the
//! page cache or `EAGAIN`, never a wait for the device); a file on tmpfs
//! or ramfs is RAM, read and written directly. A filesystem that refuses
//! `RWF_NOWAIT` (`EOPNOTSUPP`, e.g. buffered writes on ext4) is not asked
//! again.

use super::{Backend, BackendError, Result};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How to open a file backend.
#[derive(Debug, Clone, Default)]
pub struct FileOptions {
    /// Size for a new file, or to grow an existing smaller file to. `None`
    /// uses the existing file's length.
    pub size: Option<u64>,
    /// Sparse file with hole punching (else fully allocated on creation).
    pub thin: bool,
    /// Every write durable before it completes (O_DSYNC).
    pub write_through: bool,
    pub read_only: bool,
}

#[derive(Debug)]
pub struct FileBackend {
    file: File,
    path: PathBuf,
    size: AtomicU64,
    thin: bool,
    read_only: bool,
    write_through: bool,
    /// The file lives in RAM (tmpfs, ramfs): I/O never waits for a disk.
    in_ram: bool,
    /// `RWF_NOWAIT` is worth trying (cleared on `EOPNOTSUPP`).
    nowait_read: AtomicBool,
    nowait_write: AtomicBool,
}

fn fallocate(fd: i32, mode: i32, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: fallocate on a valid descriptor owned by `self.file`; no memory
    // is passed.
    let r = unsafe { libc::fallocate(fd, mode, offset as libc::off_t, len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub(super) fn lseek(fd: i32, offset: u64, whence: i32) -> std::io::Result<Option<u64>> {
    // SAFETY: lseek on a valid descriptor; all our data I/O is positional so
    // moving the file offset has no effect on it.
    let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

impl FileBackend {
    pub fn open(path: impl AsRef<Path>, opts: &FileOptions) -> Result<Self> {
        let path = path.as_ref();
        let exists = path.exists();
        let mut oo = OpenOptions::new();
        oo.read(true);
        if !opts.read_only {
            oo.write(true).create(true);
        }
        if opts.write_through {
            oo.custom_flags(libc::O_DSYNC);
        }
        let file = oo.open(path)?;
        let cur = file.metadata()?.len();
        let size = match opts.size {
            Some(s) if s > cur && !opts.read_only => {
                file.set_len(s)?;
                if !opts.thin {
                    // Fully provision new space; ignore filesystems without
                    // fallocate (the file stays sparse there).
                    let _ = fallocate(file.as_raw_fd(), 0, cur, s - cur);
                }
                s
            }
            Some(s) if !exists => s,
            _ => cur,
        };
        let in_ram = in_ram(&file);
        Ok(Self {
            file,
            path: path.to_path_buf(),
            size: AtomicU64::new(size),
            thin: opts.thin,
            read_only: opts.read_only,
            write_through: opts.write_through,
            in_ram,
            nowait_read: AtomicBool::new(true),
            nowait_write: AtomicBool::new(true),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Backend for FileBackend {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    // Past the end of a shorter file: zeros.
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        self.file.write_all_at(buf, offset)?;
        Ok(())
    }

    fn read_now(&self, buf: &mut [u8], offset: u64) -> Option<Result<()>> {
        if self.in_ram {
            return Some(self.read_at(buf, offset));
        }
        if !self.nowait_read.load(Ordering::Relaxed) {
            return None;
        }
        let fd = self.file.as_raw_fd();
        let done = self.nowait_loop(buf.len(), &self.nowait_read, |done| {
            let rest = &mut buf[done..];
            let iov = libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            };
            let at = (offset + done as u64) as libc::off_t;
            // SAFETY: one iovec over `rest`, which lives and is writable
            // for the call; the descriptor is `self.file`'s.
            unsafe { libc::preadv2(fd, &iov, 1, at, libc::RWF_NOWAIT) }
        })?;
        Some(done.map(|n| {
            // Past the end of a shorter file: zeros.
            buf[n..].fill(0);
        }))
    }

    fn write_now(&self, buf: &[u8], offset: u64) -> Option<Result<()>> {
        if self.read_only {
            return Some(Err(BackendError::ReadOnly));
        }
        if self.write_through {
            // O_DSYNC: every write waits for the device.
            return None;
        }
        if self.in_ram {
            return Some(self.write_at(buf, offset));
        }
        if !self.nowait_write.load(Ordering::Relaxed) {
            return None;
        }
        let fd = self.file.as_raw_fd();
        let done = self.nowait_loop(buf.len(), &self.nowait_write, |done| {
            let rest = &buf[done..];
            let iov = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            let at = (offset + done as u64) as libc::off_t;
            // SAFETY: one iovec over `rest`, which lives for the call (the
            // kernel only reads it); the descriptor is `self.file`'s.
            unsafe { libc::pwritev2(fd, &iov, 1, at, libc::RWF_NOWAIT) }
        })?;
        match done {
            // A write that took nothing: the blocking path reports it.
            Ok(n) if n < buf.len() => None,
            other => Some(other.map(drop)),
        }
    }

    fn flush(&self) -> Result<()> {
        self.file.sync_data()?;
        Ok(())
    }

    fn supports_unmap(&self) -> bool {
        self.thin && !self.read_only
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        if !self.supports_unmap() {
            return Err(BackendError::Unsupported);
        }
        if len == 0 {
            return Ok(());
        }
        match fallocate(
            self.file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                self.write_zeroes_plain(offset, len)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        if len == 0 {
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        let mode = if self.thin {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match fallocate(fd, mode, offset, len) {
            Ok(()) => Ok(()),
            Err(_) => self.write_zeroes_plain(offset, len),
        }
    }

    fn seek_data(&self, offset: u64) -> Result<Option<u64>> {
        let size = self.size();
        if offset >= size {
            return Ok(None);
        }
        match lseek(self.file.as_raw_fd(), offset, libc::SEEK_DATA) {
            Ok(Some(o)) if o < size => Ok(Some(o)),
            Ok(_) => Ok(None),
            // Filesystems without SEEK_DATA: everything is data.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Some(offset)),
            Err(e) => Err(e.into()),
        }
    }

    fn seek_hole(&self, offset: u64) -> Result<u64> {
        let size = self.size();
        if offset >= size {
            return Ok(size);
        }
        match lseek(self.file.as_raw_fd(), offset, libc::SEEK_HOLE) {
            Ok(Some(o)) => Ok(o.min(size)),
            Ok(None) => Ok(size),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(size),
            Err(e) => Err(e.into()),
        }
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        let cur = self.file.metadata()?.len();
        if new_size != cur {
            self.file.set_len(new_size)?;
            if new_size > cur && !self.thin {
                let _ = fallocate(self.file.as_raw_fd(), 0, cur, new_size - cur);
            }
        }
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }
}

/// Whether the file lives in RAM (tmpfs, ramfs): reading or writing it
/// never waits for a device.
// `f_type`'s integer type differs between Linux targets.
#[allow(clippy::useless_conversion)]
fn in_ram(file: &File) -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    // SAFETY: fstatfs fills the zeroed struct we pass; the descriptor is
    // `file`'s.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    let t = i64::from(st.f_type);
    t == i64::from(libc::TMPFS_MAGIC) || t == RAMFS_MAGIC
}

impl FileBackend {
    /// A `RWF_NOWAIT` call failed: `None` (the caller goes the blocking
    /// way) for "would wait", an interrupted call, or a filesystem without
    /// `RWF_NOWAIT` (not asked again); other errors are the I/O's answer.
    fn nowait_failed(&self, flag: &AtomicBool) -> Option<Result<()>> {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => None,
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                flag.store(false, Ordering::Relaxed);
                None
            }
            _ => Some(Err(e.into())),
        }
    }

    /// Runs `call(done)`, a `preadv2`/`pwritev2` with `RWF_NOWAIT` for the
    /// bytes after the first `done`, until `len` bytes have moved or a call
    /// moves none (end of file); gives the bytes moved, or `None` as
    /// [`FileBackend::nowait_failed`] decides.
    fn nowait_loop(
        &self,
        len: usize,
        flag: &AtomicBool,
        mut call: impl FnMut(usize) -> isize,
    ) -> Option<Result<usize>> {
        let mut done = 0;
        while done < len {
            match call(done) {
                0 => break,
                n if n > 0 => done += n as usize,
                _ => return self.nowait_failed(flag).map(|r| r.map(|()| done)),
            }
        }
        Some(Ok(done))
    }

    fn write_zeroes_plain(&self, offset: u64, len: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done) as usize;
            self.file.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_file_behaviour() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lun0.img");
        let b = FileBackend::open(
            &p,
            &FileOptions {
                size: Some(4 << 20),
                thin: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(b.size(), 4 << 20);
        super::super::tests::exercise(&b, true);
        // Sparse: data only where written.
        b.write_at(&[1u8; 4096], 2 << 20).unwrap();
        let d = b.seek_data(0).unwrap().unwrap();
        assert!(d <= 2 << 20);
        assert_eq!(b.seek_data(3 << 20).unwrap(), None);
        let h = b.seek_hole(2 << 20).unwrap();
        assert!(h > 2 << 20);
    }

    /// The fast path reads and writes what `read_at`/`write_at` would, or
    /// declines; on tmpfs (RAM) it never declines.
    #[test]
    fn read_now_and_write_now_match_the_blocking_path() {
        let shm = std::path::Path::new("/dev/shm");
        let dirs = [
            Some(tempfile::tempdir().unwrap()),
            shm.is_dir()
                .then(|| tempfile::tempdir_in(shm).unwrap())
                .filter(|d| in_ram(&File::open(d.path()).unwrap())),
        ];
        for (i, dir) in dirs.iter().enumerate() {
            let Some(dir) = dir else { continue };
            let b = FileBackend::open(
                dir.path().join("n.img"),
                &FileOptions {
                    size: Some(1 << 20),
                    ..Default::default()
                },
            )
            .unwrap();
            let ram = i == 1;
            assert_eq!(b.in_ram, ram);
            let data: Vec<u8> = (0..8192u32).map(|i| (i * 13 + 1) as u8).collect();
            match b.write_now(&data, 4096) {
                Some(r) => r.unwrap(),
                None => {
                    assert!(!ram, "tmpfs never waits");
                    b.write_at(&data, 4096).unwrap();
                }
            }
            // Just written: in the page cache.
            let mut back = vec![0u8; 8192];
            b.read_now(&mut back, 4096).unwrap().unwrap();
            assert_eq!(back, data);
            // Past the end of the file: zeros, like read_at.
            let mut tail = vec![0xAAu8; 4096];
            if let Some(r) = b.read_now(&mut tail, 1 << 20) {
                r.unwrap();
                assert!(tail.iter().all(|&x| x == 0));
            }
        }
        // Write-through and read-only files are never written on the fast
        // path.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.img");
        let mut opts = FileOptions {
            size: Some(1 << 20),
            write_through: true,
            ..Default::default()
        };
        let wt = FileBackend::open(&p, &opts).unwrap();
        assert!(wt.write_now(b"x", 0).is_none());
        opts.read_only = true;
        let ro = FileBackend::open(&p, &opts).unwrap();
        assert!(matches!(
            ro.write_now(b"x", 0),
            Some(Err(BackendError::ReadOnly))
        ));
    }

    #[test]
    fn existing_file_keeps_data_and_resize() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        {
            let b = FileBackend::open(
                &p,
                &FileOptions {
                    size: Some(1 << 20),
                    ..Default::default()
                },
            )
            .unwrap();
            b.write_at(b"hello", 512).unwrap();
            b.flush().unwrap();
        }
        let b = FileBackend::open(
            &p,
            &FileOptions {
                size: Some(1 << 20),
                write_through: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut buf = [0u8; 5];
        b.read_at(&mut buf, 512).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(!b.supports_unmap());
        b.resize(2 << 20).unwrap();
        assert_eq!(b.size(), 2 << 20);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 2 << 20);
        super::super::tests::exercise(&b, false);
        let ro = FileBackend::open(
            &p,
            &FileOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(ro.write_at(b"x", 0), Err(BackendError::ReadOnly)));
        assert_eq!(ro.size(), 2 << 20);
    }
}
