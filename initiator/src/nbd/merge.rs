//! Adjacent NBD READs that arrive together become one SCSI READ, as the
//! block layer merges requests before a disk sees them.
//!
//! A client streaming sequentially (fio, qemu, nbdcopy, nbdfuse: none of
//! them merges) sends READs of 64-256 KiB back to back. Each SCSI command
//! costs the target and this bridge a fixed amount of CPU whatever its
//! size, and a target such as tgtd spends most of its time there. So when
//! the socket's buffer already holds further READ headers that continue
//! the one just parsed, with the same flags, valid and within
//! [`MAX_BYTES`] and the LUN's maximum transfer, they are taken with it and
//! answered from one READ: each request still gets its own reply, split
//! from the data without a copy. If the merged READ fails, each request is
//! retried alone, so that each gets its own precise error. Nothing waits
//! for a request that has not arrived.

use super::wire::{Request, CMD_READ, REQUEST_LEN};

/// Largest merged READ.
pub(crate) const MAX_BYTES: u64 = 1 << 20;

/// Most requests in one merged READ (each holds one of the connection's
/// in-flight slots).
pub(crate) const MAX_REQUESTS: usize = 32;

/// The READ requests at the start of `buffered` (raw request headers
/// already read from the socket) that continue `first` back to back, with
/// its flags, as long as `valid` accepts them, the total stays within
/// `max` bytes and the merge within [`MAX_REQUESTS`] requests. The caller consumes `REQUEST_LEN` bytes per request
/// returned.
pub(crate) fn continuing_reads(
    first: &Request,
    buffered: &[u8],
    max: u64,
    valid: impl Fn(&Request) -> bool,
) -> Vec<Request> {
    let mut out = Vec::new();
    if first.kind != CMD_READ {
        return out;
    }
    let mut end = first.offset.saturating_add(u64::from(first.length));
    let mut total = u64::from(first.length);
    for chunk in buffered.chunks_exact(REQUEST_LEN) {
        let Ok(hdr) = <&[u8; REQUEST_LEN]>::try_from(chunk) else {
            break;
        };
        let Some(r) = Request::parse(hdr) else { break };
        let len = u64::from(r.length);
        if out.len() + 1 >= MAX_REQUESTS
            || r.kind != CMD_READ
            || r.flags != first.flags
            || r.offset != end
            || total + len > max
            || !valid(&r)
        {
            break;
        }
        end += len;
        total += len;
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::wire::{CMD_FLAG_FUA, CMD_WRITE};

    fn req(kind: u16, handle: u64, offset: u64, length: u32) -> Request {
        Request {
            flags: 0,
            kind,
            handle,
            offset,
            length,
        }
    }

    fn wire(reqs: &[Request]) -> Vec<u8> {
        reqs.iter().flat_map(|r| r.encode()).collect()
    }

    #[test]
    fn takes_the_reads_that_continue_the_first() {
        let k = 128 * 1024;
        let first = req(CMD_READ, 1, 0, k);
        let buf = wire(&[
            req(CMD_READ, 2, k as u64, k),
            req(CMD_READ, 3, 2 * k as u64, k),
            req(CMD_READ, 4, 9 * k as u64, k), // a gap: stops here
            req(CMD_READ, 5, 10 * k as u64, k),
        ]);
        let got = continuing_reads(&first, &buf, MAX_BYTES, |_| true);
        assert_eq!(got.iter().map(|r| r.handle).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn stops_at_other_kinds_flags_invalid_requests_the_cap_and_partial_headers() {
        let k = 64 * 1024;
        let first = req(CMD_READ, 1, 0, k);
        let write = req(CMD_WRITE, 2, k as u64, k);
        assert!(continuing_reads(&first, &wire(&[write]), MAX_BYTES, |_| true).is_empty());
        let mut fua = req(CMD_READ, 2, k as u64, k);
        fua.flags = CMD_FLAG_FUA;
        assert!(continuing_reads(&first, &wire(&[fua]), MAX_BYTES, |_| true).is_empty());
        let next = req(CMD_READ, 2, k as u64, k);
        assert!(continuing_reads(&first, &wire(&[next]), MAX_BYTES, |_| false).is_empty());
        // The cap counts the first request: 16 x 64 KiB fill 1 MiB.
        let many: Vec<_> = (1..40).map(|i| req(CMD_READ, i, i * k as u64, k)).collect();
        assert_eq!(
            continuing_reads(&first, &wire(&many), MAX_BYTES, |_| true).len(),
            15
        );
        // At most MAX_REQUESTS in all: 4 KiB reads stop at the count.
        let small: Vec<_> = (1..100).map(|i| req(CMD_READ, i, i * 4096, 4096)).collect();
        let first4k = req(CMD_READ, 0, 0, 4096);
        assert_eq!(
            continuing_reads(&first4k, &wire(&small), MAX_BYTES, |_| true).len(),
            MAX_REQUESTS - 1
        );
        // A header not yet complete in the buffer is left alone.
        let mut buf = wire(&[next]);
        buf.truncate(REQUEST_LEN - 1);
        assert!(continuing_reads(&first, &buf, MAX_BYTES, |_| true).is_empty());
        // A bad magic is left for the request loop to reject.
        let mut bad = wire(&[req(CMD_READ, 2, k as u64, k)]);
        bad[0] ^= 0xff;
        assert!(continuing_reads(&first, &bad, MAX_BYTES, |_| true).is_empty());
        // Only READs start a merge.
        assert!(
            continuing_reads(&req(CMD_WRITE, 1, 0, k), &wire(&many), MAX_BYTES, |_| true)
                .is_empty()
        );
    }
}
