//! Null backend: reads return zeros, writes are discarded. For benchmarks
//! of the protocol path.

use super::{Backend, Result};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct NullBackend {
    size: AtomicU64,
}

impl NullBackend {
    pub fn new(size: u64) -> Self {
        Self {
            size: AtomicU64::new(size),
        }
    }
}

impl Backend for NullBackend {
    fn kind(&self) -> &'static str {
        "null"
    }
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> Result<()> {
        Ok(())
    }
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
    fn punch_hole(&self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }
    fn seek_data(&self, _offset: u64) -> Result<Option<u64>> {
        Ok(None)
    }
    fn seek_hole(&self, offset: u64) -> Result<u64> {
        Ok(offset.min(self.size()))
    }
    fn resize(&self, new_size: u64) -> Result<()> {
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zero_after_write() {
        let b = NullBackend::new(1 << 20);
        b.write_at(&[7u8; 512], 0).unwrap();
        let mut buf = [1u8; 512];
        b.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        assert_eq!(b.seek_data(0).unwrap(), None);
        b.resize(2 << 20).unwrap();
        assert_eq!(b.size(), 2 << 20);
    }
}
