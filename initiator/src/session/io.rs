//! The tokio side of a session's connections: one reader task that
//! decodes PDUs and feeds them to the core (under the state lock), one
//! writer task that writes the PDUs the core produced (ExpStatSN already
//! stamped) in vectored batches; and the pool of Data-In reassembly
//! buffers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto::pdu::Pdu;
use tokio::sync::mpsc;

use super::state::Inner;
use super::Counters;
use crate::connection;
use crate::sync::lock;

pub(super) async fn reader_task(
    inner: std::sync::Weak<Inner>,
    epoch: u64,
    ci: usize,
    mut reader: connection::PduReader,
    counters: Arc<Counters>,
) {
    loop {
        let res = reader.read().await;
        let Some(i) = inner.upgrade() else { return };
        match res {
            Ok((pdu, wire_len)) => {
                counters.pdus_in.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_in
                    .fetch_add(wire_len as u64, Ordering::Relaxed);
                if let Err(e) = i.handle_pdu(epoch, ci, pdu) {
                    i.conn_failed(epoch, e);
                    return;
                }
            }
            Err(e) => {
                i.conn_failed(epoch, e.to_string());
                return;
            }
        }
    }
}

pub(super) async fn writer_task(
    inner: std::sync::Weak<Inner>,
    epoch: u64,
    mut writer: connection::PduWriter,
    mut rx: mpsc::UnboundedReceiver<Pdu>,
    counters: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(64);
    loop {
        let Some(first) = rx.recv().await else { return };
        batch.push(first);
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        match writer.write_batch(&batch).await {
            Ok(n) => {
                counters
                    .pdus_out
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                if let Some(i) = inner.upgrade() {
                    i.conn_failed(epoch, e.to_string());
                }
                return;
            }
        }
        batch.clear();
    }
}

/// A read's reassembled data as `Bytes`; a large buffer goes back to the
/// pool when the last `Bytes` of it is dropped.
pub(super) fn pooled(b: Vec<u8>, pool: &Arc<BufPool>) -> Bytes {
    if b.capacity() >= POOL_MIN_BUFFER {
        Bytes::from_owner(Pooled {
            buf: b,
            pool: Arc::downgrade(pool),
        })
    } else if b.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(b)
    }
}

/// Smallest Data-In buffer worth recycling.
const POOL_MIN_BUFFER: usize = 64 * 1024;
/// Bound on the memory the pool keeps.
const POOL_MAX_BYTES: usize = 64 << 20;

/// Recycled Data-In reassembly buffers. A fresh multi-megabyte allocation
/// per read costs page faults (the allocator maps and unmaps large blocks),
/// which dominated deep-queue sequential reads in profiles; a buffer comes
/// back here when the last `Bytes` of a result is dropped.
#[derive(Default)]
pub(super) struct BufPool {
    free: Mutex<(Vec<Vec<u8>>, usize)>,
}

impl BufPool {
    /// An empty buffer with room for `len` bytes.
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        if len >= POOL_MIN_BUFFER {
            let mut f = lock(&self.free);
            let fits = |v: &Vec<u8>| v.capacity() >= len && v.capacity() / 2 <= len;
            if let Some(i) = f.0.iter().position(fits) {
                let mut v = f.0.swap_remove(i);
                f.1 -= v.capacity();
                v.clear();
                return v;
            }
        }
        Vec::with_capacity(len)
    }

    /// Keep `v` for a later [`take`](Self::take), if it is big enough to
    /// be taken and the pool has room.
    pub(super) fn give(&self, v: Vec<u8>) {
        if v.capacity() < POOL_MIN_BUFFER {
            return;
        }
        let mut f = lock(&self.free);
        if f.1 + v.capacity() <= POOL_MAX_BYTES {
            f.1 += v.capacity();
            f.0.push(v);
        }
    }
}

/// A pooled buffer owned by a `Bytes`; returns to the pool on drop.
struct Pooled {
    buf: Vec<u8>,
    pool: std::sync::Weak<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(p) = self.pool.upgrade() {
            p.give(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_in_buffers_are_recycled_when_the_result_is_dropped() {
        let pool = Arc::new(BufPool::default());
        let mut v = pool.take(1 << 20);
        assert!(v.capacity() >= 1 << 20 && v.is_empty());
        v.extend_from_slice(&[7u8; 1000]);
        let ptr = v.as_ptr();
        let data = pooled(v, &pool);
        assert_eq!(&data[..], &[7u8; 1000][..]);
        let slice = data.slice(10..20);
        drop(data);
        // Still referenced by the slice: not back in the pool yet.
        let fresh = pool.take(1 << 20);
        assert_ne!(fresh.as_ptr(), ptr);
        drop(fresh);
        drop(slice);
        let again = pool.take(1 << 20);
        assert_eq!(again.as_ptr(), ptr, "the same allocation is reused");
        assert!(again.is_empty());
        // A much smaller request does not take a huge buffer.
        pool.give(again);
        let small = pool.take(100 * 1024);
        assert_ne!(small.as_ptr(), ptr);
    }
}
