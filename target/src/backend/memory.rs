//! In-memory backend: sparse 1 MiB chunks, each behind its own lock, so a
//! `mem:1G` LUN allocates only what is written and concurrent I/O to
//! different chunks never contends. Untouched chunks read as zeros; unmap
//! frees whole chunks and zeros partial ones.

use super::{Backend, Result};
use crate::sync::{read_lock, write_lock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

const CHUNK: u64 = 1 << 20;

type Chunk = Arc<RwLock<Option<Box<[u8]>>>>;

#[derive(Debug)]
pub struct MemoryBackend {
    chunks: RwLock<Vec<Chunk>>,
    size: AtomicU64,
}

fn new_chunks(n: u64) -> Vec<Chunk> {
    (0..n).map(|_| Arc::new(RwLock::new(None))).collect()
}

impl MemoryBackend {
    pub fn new(size: u64) -> Self {
        Self {
            chunks: RwLock::new(new_chunks(size.div_ceil(CHUNK))),
            size: AtomicU64::new(size),
        }
    }

    fn chunk(&self, i: u64) -> Option<Chunk> {
        read_lock(&self.chunks).get(i as usize).cloned()
    }

    /// Calls `f(chunk, offset in chunk, range in buf)` for each chunk the
    /// byte range touches.
    fn for_each(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&Chunk, usize, std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let idx = pos / CHUNK;
            let within = (pos % CHUNK) as usize;
            let n = ((CHUNK as usize) - within).min(len - done);
            match self.chunk(idx) {
                Some(c) => f(&c, within, done..done + n)?,
                None => return Err(super::BackendError::OutOfRange),
            }
            done += n;
        }
        Ok(())
    }

    /// Number of allocated chunks (for tests and stats).
    pub fn allocated_bytes(&self) -> u64 {
        let chunks = read_lock(&self.chunks);
        chunks
            .iter()
            .filter(|c| c.read().map(|g| g.is_some()).unwrap_or(true))
            .count() as u64
            * CHUNK
    }

    fn zero_range(&self, offset: u64, len: u64, free: bool) -> Result<()> {
        self.for_each(offset, len as usize, |c, within, r| {
            let mut g = write_lock(c);
            if free && within == 0 && r.len() as u64 == CHUNK {
                *g = None;
            } else if let Some(data) = g.as_mut() {
                data[within..within + r.len()].fill(0);
            }
            Ok(())
        })
    }
}

impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len();
        self.for_each(offset, len, |c, within, r| {
            let g = read_lock(c);
            match g.as_ref() {
                Some(data) => buf[r.clone()].copy_from_slice(&data[within..within + r.len()]),
                None => buf[r].fill(0),
            }
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.for_each(offset, buf.len(), |c, within, r| {
            let mut g = write_lock(c);
            let data = g.get_or_insert_with(|| vec![0u8; CHUNK as usize].into_boxed_slice());
            data[within..within + r.len()].copy_from_slice(&buf[r]);
            Ok(())
        })
    }

    /// RAM: never waits.
    fn read_now(&self, buf: &mut [u8], offset: u64) -> Option<Result<()>> {
        Some(self.read_at(buf, offset))
    }

    fn write_now(&self, buf: &[u8], offset: u64) -> Option<Result<()>> {
        Some(self.write_at(buf, offset))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn supports_unmap(&self) -> bool {
        true
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len, true)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.zero_range(offset, len, true)
    }

    fn seek_data(&self, offset: u64) -> Result<Option<u64>> {
        let size = self.size();
        let mut pos = offset;
        while pos < size {
            let idx = pos / CHUNK;
            if let Some(c) = self.chunk(idx) {
                if read_lock(&c).is_some() {
                    return Ok(Some(pos));
                }
            }
            pos = (idx + 1) * CHUNK;
        }
        Ok(None)
    }

    fn seek_hole(&self, offset: u64) -> Result<u64> {
        let size = self.size();
        let mut pos = offset;
        while pos < size {
            let idx = pos / CHUNK;
            match self.chunk(idx) {
                Some(c) if read_lock(&c).is_some() => pos = (idx + 1) * CHUNK,
                _ => return Ok(pos),
            }
        }
        Ok(size)
    }

    fn resize(&self, new_size: u64) -> Result<()> {
        let mut chunks = write_lock(&self.chunks);
        let old = self.size();
        let n = new_size.div_ceil(CHUNK) as usize;
        if n > chunks.len() {
            let extra = new_chunks((n - chunks.len()) as u64);
            chunks.extend(extra);
        } else {
            chunks.truncate(n);
        }
        // Space between the old and new end must read as zeros later.
        if new_size < old && !new_size.is_multiple_of(CHUNK) {
            if let Some(c) = chunks.last() {
                if let Some(d) = write_lock(c).as_mut() {
                    d[(new_size % CHUNK) as usize..].fill(0);
                }
            }
        }
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_and_unmap() {
        let b = MemoryBackend::new(1 << 30);
        assert_eq!(b.allocated_bytes(), 0);
        super::super::tests::exercise(&b, true);
        // Write across a chunk boundary.
        let data = vec![0x5Au8; 4096];
        b.write_at(&data, CHUNK - 2048).unwrap();
        assert_eq!(b.allocated_bytes(), 2 * CHUNK);
        let mut back = vec![0u8; 4096];
        b.read_at(&mut back, CHUNK - 2048).unwrap();
        assert_eq!(back, data);
        assert_eq!(b.seek_data(0).unwrap(), Some(0));
        assert_eq!(b.seek_hole(0).unwrap(), 2 * CHUNK);
        assert_eq!(b.seek_data(2 * CHUNK).unwrap(), None);
        b.punch_hole(0, 2 * CHUNK).unwrap();
        assert_eq!(b.allocated_bytes(), 0);
        assert!(matches!(
            b.read_at(&mut back, 1 << 30),
            Err(super::super::BackendError::OutOfRange)
        ));
    }

    #[test]
    fn resize_grow_and_shrink() {
        let b = MemoryBackend::new(2 * CHUNK);
        b.write_at(&[9u8; 100], 2 * CHUNK - 100).unwrap();
        b.resize(CHUNK + 10).unwrap();
        b.resize(3 * CHUNK).unwrap();
        let mut buf = [1u8; 100];
        b.read_at(&mut buf, 2 * CHUNK - 100).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        assert_eq!(b.size(), 3 * CHUNK);
    }
}
