//! Per-LUN I/O counters: a [`Backend`] wrapper that counts operations and
//! bytes on the way through (two relaxed atomic adds per I/O, no lock).
//!
//! The admin layer builds every logical unit it starts or adds through
//! [`CountingBackend`], keeps the [`IoCounters`] handle, and reports them in
//! `target show`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{AsyncIo, Backend, IoFuture, Result};

use super::protocol::IoStats;

/// Counters of one LUN.
#[derive(Debug, Default)]
pub struct IoCounters {
    read_ops: AtomicU64,
    read_bytes: AtomicU64,
    write_ops: AtomicU64,
    write_bytes: AtomicU64,
    flush_ops: AtomicU64,
    unmap_ops: AtomicU64,
    errors: AtomicU64,
}

impl IoCounters {
    /// A consistent-enough snapshot (each counter is read atomically).
    pub fn snapshot(&self) -> IoStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IoStats {
            read_ops: g(&self.read_ops),
            read_bytes: g(&self.read_bytes),
            write_ops: g(&self.write_ops),
            write_bytes: g(&self.write_bytes),
            flush_ops: g(&self.flush_ops),
            unmap_ops: g(&self.unmap_ops),
            errors: g(&self.errors),
        }
    }

    fn count<T>(
        &self,
        r: Result<T>,
        ops: &AtomicU64,
        bytes: Option<(&AtomicU64, u64)>,
    ) -> Result<T> {
        match &r {
            Ok(_) => {
                ops.fetch_add(1, Ordering::Relaxed);
                if let Some((b, n)) = bytes {
                    b.fetch_add(n, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}

/// A backend that counts what passes through it.
#[derive(Debug)]
pub struct CountingBackend {
    inner: Arc<dyn Backend>,
    counters: Arc<IoCounters>,
}

impl CountingBackend {
    /// Wrap `inner`; returns the wrapper and its counters.
    pub fn wrap(inner: Arc<dyn Backend>) -> (Arc<dyn Backend>, Arc<IoCounters>) {
        let counters = Arc::new(IoCounters::default());
        let b = CountingBackend {
            inner,
            counters: counters.clone(),
        };
        (Arc::new(b), counters)
    }
}

impl Backend for CountingBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = buf.len() as u64;
        let r = self.inner.read_at(buf, offset);
        let c = &self.counters;
        c.count(r, &c.read_ops, Some((&c.read_bytes, n)))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let r = self.inner.write_at(buf, offset);
        let c = &self.counters;
        c.count(r, &c.write_ops, Some((&c.write_bytes, buf.len() as u64)))
    }

    fn read_now(&self, buf: &mut [u8], offset: u64) -> Option<Result<()>> {
        let n = buf.len() as u64;
        let r = self.inner.read_now(buf, offset)?;
        let c = &self.counters;
        Some(c.count(r, &c.read_ops, Some((&c.read_bytes, n))))
    }

    fn write_now(&self, buf: &[u8], offset: u64) -> Option<Result<()>> {
        let r = self.inner.write_now(buf, offset)?;
        let c = &self.counters;
        Some(c.count(r, &c.write_ops, Some((&c.write_bytes, buf.len() as u64))))
    }

    fn flush(&self) -> Result<()> {
        let c = &self.counters;
        c.count(self.inner.flush(), &c.flush_ops, None)
    }

    fn flush_range(&self, offset: u64, len: u64) -> Result<()> {
        let c = &self.counters;
        c.count(self.inner.flush_range(offset, len), &c.flush_ops, None)
    }

    fn supports_unmap(&self) -> bool {
        self.inner.supports_unmap()
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        let c = &self.counters;
        c.count(self.inner.punch_hole(offset, len), &c.unmap_ops, None)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        let c = &self.counters;
        c.count(
            self.inner.write_zeroes(offset, len),
            &c.write_ops,
            Some((&c.write_bytes, len)),
        )
    }

    fn seek_data(&self, offset: u64) -> Result<Option<u64>> {
        self.inner.seek_data(offset)
    }

    fn seek_hole(&self, offset: u64) -> Result<u64> {
        self.inner.seek_hole(offset)
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        self.inner.resize(new_size)
    }

    fn aio(&self) -> Option<&dyn AsyncIo> {
        self.inner.aio().map(|_| self as &dyn AsyncIo)
    }

    fn unmap_granularity(&self) -> u64 {
        self.inner.unmap_granularity()
    }

    fn unmap_reads_zero(&self) -> bool {
        self.inner.unmap_reads_zero()
    }

    fn info(&self) -> Option<serde_json::Value> {
        self.inner.info()
    }
}

/// Which counters an asynchronous operation bumps.
#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Flush,
    Unmap,
}

impl CountingBackend {
    /// The inner backend's future, counted when it completes. Only called
    /// through `aio()`, which exists only when the inner backend has one.
    fn counted<T: Send + 'static>(
        &self,
        kind: Kind,
        bytes: u64,
        f: impl FnOnce(&dyn AsyncIo) -> IoFuture<T>,
    ) -> IoFuture<T> {
        let Some(a) = self.inner.aio() else {
            return Box::pin(async { Err(crate::backend::BackendError::Unsupported) });
        };
        let fut = f(a);
        let c = self.counters.clone();
        Box::pin(async move {
            let r = fut.await;
            match kind {
                Kind::Read => c.count(r, &c.read_ops, Some((&c.read_bytes, bytes))),
                Kind::Write => c.count(r, &c.write_ops, Some((&c.write_bytes, bytes))),
                Kind::Flush => c.count(r, &c.flush_ops, None),
                Kind::Unmap => c.count(r, &c.unmap_ops, None),
            }
        })
    }
}

impl AsyncIo for CountingBackend {
    fn read(&self, offset: u64, len: usize) -> IoFuture<Bytes> {
        self.counted(Kind::Read, len as u64, |a| a.read(offset, len))
    }

    fn write(&self, offset: u64, data: Bytes) -> IoFuture<()> {
        self.counted(Kind::Write, data.len() as u64, |a| a.write(offset, data))
    }

    fn flush(&self) -> IoFuture<()> {
        self.counted(Kind::Flush, 0, |a| a.flush())
    }

    fn discard(&self, offset: u64, len: u64) -> IoFuture<()> {
        self.counted(Kind::Unmap, 0, |a| a.discard(offset, len))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> IoFuture<()> {
        self.counted(Kind::Write, len, |a| a.write_zeroes(offset, len))
    }

    fn write_same(&self, offset: u64, len: u64, block: Bytes) -> IoFuture<()> {
        self.counted(Kind::Write, len, |a| a.write_same(offset, len, block))
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: Bytes,
        data: Bytes,
    ) -> IoFuture<Option<u64>> {
        let n = data.len() as u64;
        self.counted(Kind::Write, n, |a| {
            a.compare_and_write(offset, expected, data)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{MemoryBackend, NullBackend};

    #[test]
    fn counts_ops_bytes_and_errors() {
        let (b, c) = CountingBackend::wrap(Arc::new(MemoryBackend::new(1 << 20)));
        assert_eq!(b.kind(), MemoryBackend::new(1 << 20).kind());
        b.write_at(&[1u8; 4096], 0).unwrap();
        b.write_at(&[2u8; 512], 4096).unwrap();
        let mut buf = [0u8; 1024];
        b.read_at(&mut buf, 0).unwrap();
        b.flush().unwrap();
        assert!(b.read_at(&mut buf, 2 << 20).is_err());
        let s = c.snapshot();
        assert_eq!((s.write_ops, s.write_bytes), (2, 4608));
        assert_eq!((s.read_ops, s.read_bytes), (1, 1024));
        assert_eq!(s.flush_ops, 1);
        assert_eq!(s.errors, 1);
        // Capabilities pass through.
        let (n, _) = CountingBackend::wrap(Arc::new(NullBackend::new(1 << 20)));
        assert_eq!(n.size(), 1 << 20);
        assert!(b.resize(2 << 20).is_ok());
        assert_eq!(b.size(), 2 << 20);
    }
}
