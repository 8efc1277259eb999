//! Asynchronous operations: one `rbd_aio_*` call per [`Op`], or, over one
//! or several adjacent requests ([`Image::submit_vectored`], the merged
//! requests of `super::super::merge`), one `rbd_aio_writev` or one
//! zero-copy read ([`super::zc`]). Each completion's callback argument is
//! a leaked box that owns the buffers librbd reads from or writes into
//! (see the parent module).

use std::ffi::{c_char, c_int, c_void};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::zc::ReadData;
use super::*;

/// What an aio operation keeps alive until librbd completes it.
#[derive(Debug)]
pub(crate) enum Keep {
    None,
    /// A read of the part's length ([`Part`]), still to come: nothing is
    /// allocated for it, librbd's buffers become [`Keep::Data`].
    Read,
    /// A read's result, exactly the length asked (else the read stays
    /// [`Keep::Read`]: a short read, an error to the caller).
    Data(Bytes),
    Write(Bytes),
    Compare(Bytes, Bytes),
}

/// The outcome of one aio operation.
#[derive(Debug)]
pub(crate) struct Done {
    /// librbd's return value: bytes or 0 on success, negative errno.
    pub ret: i64,
    pub keep: Keep,
    /// COMPARE AND WRITE: offset of the first differing byte (on EILSEQ).
    pub mismatch: u64,
}

struct Pending {
    tx: oneshot::Sender<Done>,
    keep: Keep,
    mismatch: u64,
}

/// The box leaked for completion `c` and librbd's return value; the
/// completion is released.
///
/// # Safety
/// `arg` must be the `Box<T>` leaked as the argument of `c`, from inside
/// `c`'s callback (which librbd calls exactly once, so the box is
/// reclaimed once).
unsafe fn reclaim<T>(c: rbd_completion_t, arg: *mut c_void) -> (Box<T>, i64) {
    // SAFETY: see the function's contract; the value is read before the
    // completion is released.
    unsafe {
        let p = Box::from_raw(arg as *mut T);
        let ret = rbd_aio_get_return_value(c) as i64;
        rbd_aio_release(c);
        (p, ret)
    }
}

extern "C" fn on_complete(c: rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the Box<Pending> leaked by `submit` for this very
    // completion, and this is its callback.
    let (p, ret) = unsafe { reclaim::<Pending>(c, arg) };
    let Pending { tx, keep, mismatch } = *p;
    // The receiver may be gone (command timed out): then the buffers are
    // simply dropped here, after librbd is done with them.
    let _ = tx.send(Done {
        ret,
        keep,
        mismatch,
    });
}

/// One aio operation to start (reads go through
/// [`Image::submit_vectored`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    Write {
        off: u64,
    },
    Discard {
        off: u64,
        len: u64,
    },
    WriteZeroes {
        off: u64,
        len: u64,
    },
    /// `Keep::Write` holds one block repeated over `len` bytes.
    WriteSame {
        off: u64,
        len: u64,
    },
    /// `Keep::Compare(cmp, data)`, both `len` bytes.
    CompareAndWrite {
        off: u64,
    },
    Flush,
}

impl Image {
    /// Starts `op` with the buffers in `keep`; the receiver gets the result.
    /// A submission librbd refuses outright completes the receiver at once.
    pub(crate) fn submit(&self, op: Op, keep: Keep) -> oneshot::Receiver<Done> {
        let (tx, rx) = oneshot::channel();
        let p = Box::into_raw(Box::new(Pending {
            tx,
            keep,
            mismatch: 0,
        }));
        let mut c: rbd_completion_t = std::ptr::null_mut();
        // SAFETY: `p` is a valid leaked box; the completion takes it as its
        // callback argument.
        let r = unsafe { rbd_aio_create_completion(p as *mut c_void, on_complete, &mut c) };
        if r < 0 {
            // SAFETY: no completion exists, so the box is still ours alone.
            let p = unsafe { Box::from_raw(p) };
            let _ = p.tx.send(Done {
                ret: r as i64,
                keep: p.keep,
                mismatch: 0,
            });
            return rx;
        }
        // SAFETY: before submission nothing else can touch `*p`: the raw
        // pointers taken here point into heap buffers owned by the box
        // (a Bytes' storage does not move with the box), which
        // the callback frees only after librbd completed the operation.
        // After the rbd_aio_* call we never dereference `p` again.
        let r: i64 = unsafe {
            let h = self.h;
            let keep = &mut (*p).keep;
            let mism: *mut u64 = &mut (*p).mismatch;
            match (op, keep) {
                (Op::Write { off }, Keep::Write(d)) => {
                    rbd_aio_write(h, off, d.len(), d.as_ptr() as *const c_char, c) as i64
                }
                (Op::Discard { off, len }, _) => rbd_aio_discard(h, off, len, c) as i64,
                (Op::WriteZeroes { off, len }, _) => {
                    rbd_aio_write_zeroes(h, off, len as usize, c, 0, 0) as i64
                }
                (Op::WriteSame { off, len }, Keep::Write(d)) => rbd_aio_writesame(
                    h,
                    off,
                    len as usize,
                    d.as_ptr() as *const c_char,
                    d.len(),
                    c,
                    0,
                ) as i64,
                (Op::CompareAndWrite { off }, Keep::Compare(cmp, d)) => rbd_aio_compare_and_write(
                    h,
                    off,
                    d.len(),
                    cmp.as_ptr() as *const c_char,
                    d.as_ptr() as *const c_char,
                    c,
                    mism,
                    0,
                ) as i64,
                (Op::Flush, _) => rbd_aio_flush(h, c) as i64,
                // An op without the buffers it needs: never submitted.
                _ => -(libc::EINVAL as i64),
            }
        };
        if r < 0 {
            // librbd refused the request before queueing it: as qemu's and
            // tcmu-runner's rbd drivers do, we take it that the callback
            // will not run, so the completion and the box are ours.
            // SAFETY: see above; nothing else references them.
            let p = unsafe {
                rbd_aio_release(c);
                Box::from_raw(p)
            };
            let _ = p.tx.send(Done {
                ret: r,
                keep: p.keep,
                mismatch: 0,
            });
        }
        rx
    }
}

/// One request of a merged operation: its buffer (`Keep::Read`, or
/// `Keep::Write` of its length) and where its result goes.
#[derive(Debug)]
pub(crate) struct Part {
    pub keep: Keep,
    pub len: usize,
    pub tx: oneshot::Sender<Done>,
}

/// What a vectored write keeps alive until librbd completes it: the parts
/// (their buffers) and the iovec array that points into them (librbd
/// keeps the array's address, not a copy, until completion).
struct PendingV {
    parts: Vec<Part>,
    iov: Vec<libc::iovec>,
}

// SAFETY: the iovecs only point into the parts' heap buffers, which move
// with the box; nothing else shares them.
unsafe impl Send for PendingV {}

extern "C" fn on_vectored_complete(c: rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the Box<PendingV> leaked by `submit_vectored` for
    // this completion, and this is its callback.
    let (p, ret) = unsafe { reclaim::<PendingV>(c, arg) };
    finish_parts(p.parts, ret, None);
}

/// Hands each part its share of the merged result: its own length on
/// success (a read then gets its own bytes of `data`, a slice of librbd's
/// buffer where it can), else the error, or 0 (a short read: the read
/// stays `Keep::Read`, which the caller reports as short).
fn finish_parts(parts: Vec<Part>, ret: i64, data: Option<(&ReadData, &ReadStats)>) {
    let total: usize = parts.iter().map(|p| p.len).sum();
    let all = ret >= 0 && ret as usize >= total && data.is_none_or(|(d, _)| d.len() >= total);
    let mut at = 0usize;
    for mut p in parts {
        if let (true, Some((d, stats))) = (all && matches!(p.keep, Keep::Read), data) {
            p.keep = Keep::Data(d.range(at, p.len, stats));
        }
        at += p.len;
        let ret = if all { p.len as i64 } else { ret.min(0) };
        let _ = p.tx.send(Done {
            ret,
            keep: p.keep,
            mismatch: 0,
        });
    }
}

impl Image {
    /// One zero-copy read (all parts `Keep::Read`; [`super::zc`]) or one
    /// `rbd_aio_writev` (all `Keep::Write`) over the adjacent ranges of
    /// `parts`, starting at `off`; each part's sender gets its own result.
    /// Parts of mixed or other kinds are refused (EINVAL to each).
    pub(crate) fn submit_vectored(&self, off: u64, parts: Vec<Part>) {
        let write = match parts.first().map(|p| &p.keep) {
            None => return,
            Some(Keep::Write(_)) => true,
            Some(_) => false,
        };
        let fits = |p: &Part| match &p.keep {
            Keep::Read => !write,
            Keep::Write(d) => write && d.len() == p.len,
            _ => false,
        };
        if !parts.iter().all(fits) {
            return finish_parts(parts, -(libc::EINVAL as i64), None);
        }
        if write {
            self.submit_writev(off, parts)
        } else {
            self.submit_read(off, parts)
        }
    }

    /// The read half of [`Self::submit_vectored`]: one read of the parts'
    /// total length into librbd's buffers, split among them on completion.
    fn submit_read(&self, off: u64, parts: Vec<Part>) {
        let total: usize = parts.iter().map(|p| p.len).sum();
        let stats = self.reads.clone();
        // SAFETY: `self.h` is open, and stays open until the read completes
        // (rbd_close, in Drop, waits for in-flight aio).
        unsafe {
            super::zc::aio_read(self.h, off, total, move |ret, data| {
                finish_parts(parts, ret, Some((&data, &stats)))
            })
        }
    }

    /// The write half of [`Self::submit_vectored`].
    fn submit_writev(&self, off: u64, mut parts: Vec<Part>) {
        let iov = parts
            .iter_mut()
            .map(|p| libc::iovec {
                iov_base: match &p.keep {
                    Keep::Write(d) => d.as_ptr() as *mut c_void,
                    _ => std::ptr::null_mut(),
                },
                iov_len: p.len,
            })
            .collect();
        let p = Box::into_raw(Box::new(PendingV { parts, iov }));
        let mut c: rbd_completion_t = std::ptr::null_mut();
        // SAFETY: `p` is a valid leaked box, the completion's argument.
        let r =
            unsafe { rbd_aio_create_completion(p as *mut c_void, on_vectored_complete, &mut c) };
        let r = if r < 0 {
            r
        } else {
            // SAFETY: the iovec array and the buffers it points into are
            // owned by the box, whose heap storage does not move, and are
            // freed only by the callback after librbd completed; the
            // array's length is the iovcnt given (at most a few hundred).
            // librbd only reads through the iovecs of a write.
            unsafe {
                let (iovp, n) = ((*p).iov.as_ptr(), (*p).iov.len() as c_int);
                rbd_aio_writev(self.h, iovp, n, off, c)
            }
        };
        if r < 0 {
            // Refused before queueing (or no completion): the callback
            // will not run, so the box is ours again (see `submit`).
            // SAFETY: nothing else references the box or the completion.
            let p = unsafe {
                if !c.is_null() {
                    rbd_aio_release(c);
                }
                Box::from_raw(p)
            };
            finish_parts(p.parts, r as i64, None);
        }
    }
}
