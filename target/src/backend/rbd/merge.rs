//! Adjacent requests merged into one librbd operation, as the block layer
//! merges bios into one request before a disk sees them.
//!
//! Every RADOS operation costs CPU in this process (librbd, the messenger)
//! and in the OSD whatever its size, so large sequential I/O in small
//! commands pays that cost many times. Measured with `rbd bench` on the
//! single-host cluster of `scripts/ceph-mini.sh`, reading 4 GiB
//! sequentially: 128 KiB operations at 32 in flight 1.7 GiB/s (1.62 s of
//! client CPU, 2.40 s of OSD CPU); 512 KiB operations at 8 in flight
//! 3.0 GiB/s (1.05 s and 1.25 s).
//!
//! A read or write that starts where a recent one ended (a sequential
//! stream) is queued, with those started close together (typically the
//! commands of one pass of a connection's driver: what the initiator sent
//! at once); after one yield to the runtime, the first of them to run again
//! submits the whole queue. Any other request is submitted at once (random
//! I/O pays nothing) unless requests are queued: then it queues behind
//! them. Requests therefore reach librbd in the order they came, as they
//! did before merging, and RADOS applies one client's operations on an
//! object in the order it sent them: overlapping writes keep their order
//! even though SCSI does not require it of SIMPLE commands (this target
//! treats every command as SIMPLE). Consecutive requests that are adjacent
//! reads, or adjacent writes, up to [`MAX_BYTES`] become one librbd
//! operation: one zero-copy read whose result each command gets its own
//! slice of (`ffi::zc`), or one `rbd_aio_writev` over the commands' own
//! buffers (no copy); each command still gets its own result. Nothing waits for a
//! request that may never come: a request is at most one yield late.
//! COMPARE AND WRITE, WRITE SAME, UNMAP, write-zeroes and flushes are never
//! merged: each first submits whatever is queued, then itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::ffi::{Image, Keep, Part};
use crate::sync::lock;

/// Largest merged operation. 128 KiB sequential reads at QD 32 through
/// iscsi-perf (this cluster): 7.9-8.2K IOPS unmerged; 8.6-9.0K with a
/// 512 KiB cap; 9.2-9.7K with 1 MiB; 9.2-9.8K with 2 MiB. 1 MiB keeps
/// several operations in flight at that depth, and the latency of one
/// merged operation short.
pub(crate) const MAX_BYTES: usize = 1024 * 1024;

/// Most requests in one merged operation (iovecs; IOV_MAX is 1024).
const MAX_PARTS: usize = 128;

/// Streams remembered to recognise a sequential request.
const STREAMS: usize = 8;

/// Requests waiting for their batch to be submitted, and where recent
/// requests ended.
#[derive(Debug)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    /// Requests submitted as part of a merged operation (`iscsi target
    /// show`: `merged_requests`).
    merged: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    queued: Vec<(u64, Part)>,
    /// Byte offsets just past the last requests (a ring of [`STREAMS`]).
    ends: [u64; STREAMS],
    next: usize,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                queued: Vec::new(),
                ends: [u64::MAX; STREAMS],
                next: 0,
            }),
            merged: AtomicU64::new(0),
        }
    }
}

impl Queue {
    /// Offers the request at byte offset `off`: queued (`None`) when it
    /// starts where a recent request ended, a sequential stream that the
    /// next requests are likely to continue, or when others are queued (it
    /// must not overtake them); else handed back, to be submitted at once
    /// (random I/O pays no yield).
    pub(crate) fn offer(&self, off: u64, part: Part) -> Option<Part> {
        let mut g = lock(&self.inner);
        let stream = g.ends.iter().position(|&e| e == off);
        let i = stream.unwrap_or_else(|| {
            let i = g.next;
            g.next = (i + 1) % STREAMS;
            i
        });
        g.ends[i] = off.saturating_add(part.len as u64);
        if stream.is_some() || !g.queued.is_empty() {
            g.queued.push((off, part));
            None
        } else {
            Some(part)
        }
    }

    /// Everything queued so far, as runs to submit ([`runs`]), leaving
    /// the queue empty.
    pub(crate) fn take(&self) -> Vec<Run> {
        let r = runs(std::mem::take(&mut lock(&self.inner).queued));
        let merged: usize = r.iter().map(|(_, p)| p.len()).filter(|&n| n > 1).sum();
        self.merged.fetch_add(merged as u64, Ordering::Relaxed);
        r
    }

    /// Submits everything queued so far to `image`, in arrival order.
    pub(crate) fn submit(&self, image: &Image) {
        for (off, parts) in self.take() {
            image.submit_vectored(off, parts);
        }
    }

    /// Requests submitted so far as part of a merged operation.
    pub(crate) fn merged(&self) -> u64 {
        self.merged.load(Ordering::Relaxed)
    }
}

/// One operation to submit: its offset and its requests, adjacent and of
/// one kind.
pub(crate) type Run = (u64, Vec<Part>);

/// Splits `queued` (in arrival order) into runs of consecutive requests
/// that are adjacent and of the same kind, each at most [`MAX_BYTES`] (a
/// larger request runs alone) and [`MAX_PARTS`] requests; the runs keep
/// the arrival order.
pub(crate) fn runs(queued: Vec<(u64, Part)>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut end = 0u64;
    let mut bytes = 0usize;
    for (off, part) in queued {
        let len = part.len;
        let run = out.last_mut().filter(|(_, parts)| {
            off == end
                && bytes + len <= MAX_BYTES
                && parts.len() < MAX_PARTS
                && is_write(&parts[0]) == is_write(&part)
        });
        if let Some((_, parts)) = run {
            bytes += len;
            parts.push(part);
        } else {
            bytes = len;
            out.push((off, vec![part]));
        }
        end = off + len as u64;
    }
    out
}

fn is_write(p: &Part) -> bool {
    matches!(p.keep, Keep::Write(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::oneshot;

    fn read(len: usize) -> Part {
        Part {
            keep: Keep::Read,
            len,
            tx: oneshot::channel().0,
        }
    }

    fn write(len: usize) -> Part {
        Part {
            keep: Keep::Write(Bytes::from(vec![0u8; len])),
            len,
            tx: oneshot::channel().0,
        }
    }

    fn shape(r: &[Run]) -> Vec<(u64, Vec<usize>)> {
        r.iter()
            .map(|(off, p)| (*off, p.iter().map(|p| p.len).collect()))
            .collect()
    }

    #[test]
    fn consecutive_adjacent_reads_merge_up_to_the_cap_in_arrival_order() {
        let k = 128 * 1024;
        // Ten adjacent 128 KiB reads in order: two runs (the cap holds
        // eight).
        let q = (0..10u64).map(|i| (i * k as u64, read(k))).collect();
        assert_eq!(
            shape(&runs(q)),
            vec![(0, vec![k; 8]), (8 * k as u64, vec![k, k])]
        );
        // Out of order, only consecutive neighbours merge, and the runs
        // keep the arrival order (nothing overtakes what came before it).
        let q = [0u64, 2, 1, 3, 5, 6]
            .iter()
            .map(|&i| (i * k as u64, read(k)))
            .collect();
        assert_eq!(
            shape(&runs(q)),
            vec![
                (0, vec![k]),
                (2 * k as u64, vec![k]),
                (k as u64, vec![k]),
                (3 * k as u64, vec![k]),
                (5 * k as u64, vec![k, k]),
            ]
        );
    }

    #[test]
    fn gaps_kinds_and_large_requests_split_runs() {
        let q = vec![
            (0, read(4096)),
            (4096, write(4096)),    // another kind
            (8192, write(4096)),    // joins the write
            (16384, read(4096)),    // a gap
            (20480, read(1 << 20)), // larger than the cap: alone
            (20480 + (1 << 20), read(4096)),
        ];
        assert_eq!(
            shape(&runs(q)),
            vec![
                (0, vec![4096]),
                (4096, vec![4096, 4096]),
                (16384, vec![4096]),
                (20480, vec![1 << 20]),
                (20480 + (1 << 20), vec![4096]),
            ]
        );
    }

    #[test]
    fn random_reads_stay_apart_in_order_and_none_is_lost() {
        let offs: Vec<u64> = (0..200u64).map(|i| (i * 7919 % 200) * 8192).collect();
        let r = runs(offs.iter().map(|&o| (o, read(4096))).collect());
        assert_eq!(r.iter().map(|(o, _)| *o).collect::<Vec<_>>(), offs);
    }

    #[test]
    fn streams_are_queued_and_nothing_overtakes_the_queue() {
        let q = Queue::default();
        assert!(
            q.offer(0, read(4096)).is_some(),
            "a first request goes at once"
        );
        assert!(
            q.offer(4096, read(4096)).is_none(),
            "it continues the stream"
        );
        assert!(q.offer(8192, read(4096)).is_none(), "the stream goes on");
        assert!(
            q.offer(1 << 30, read(4096)).is_none(),
            "random, but it must not overtake the queued requests"
        );
        let taken = q.take();
        assert_eq!(
            shape(&taken),
            vec![(4096, vec![4096, 4096]), (1 << 30, vec![4096])]
        );
        assert_eq!(q.merged(), 2);
        assert!(q.take().is_empty());
        assert!(
            q.offer(1 << 31, read(4096)).is_some(),
            "random, queue empty"
        );
        assert!(
            q.offer((1 << 30) + 4096, write(4096)).is_none(),
            "a second stream"
        );
        assert_eq!(shape(&q.take()), vec![((1 << 30) + 4096, vec![4096])]);
        // Eight other streams push the first one out of the ring.
        for i in 0..STREAMS as u64 {
            assert!(q.offer((i + 2) << 32, read(512)).is_some());
        }
        assert!(q.offer(12288, read(4096)).is_some());
    }

    #[test]
    fn many_small_adjacent_requests_stop_at_the_part_limit() {
        let q: Vec<_> = (0..300u64).map(|i| (i * 512, read(512))).collect();
        let r = runs(q);
        assert_eq!(
            r.iter().map(|(_, p)| p.len()).collect::<Vec<_>>(),
            vec![128, 128, 44]
        );
    }
}
