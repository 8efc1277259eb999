//! Asynchronous operations: one `rbd_aio_*` call per [`Op`], or one
//! `rbd_aio_readv`/`rbd_aio_writev` over several adjacent requests
//! ([`Image::submit_vectored`], the merged requests of `super::super::merge`).
//! Each completion's callback argument is a leaked box that owns the
//! buffers librbd reads from or writes into (see the parent module).

use std::ffi::{c_char, c_int, c_void};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::*;

/// What an aio operation keeps alive until librbd completes it.
#[derive(Debug)]
pub(crate) enum Keep {
    None,
    /// The destination of a read: empty, with capacity for the read's
    /// length ([`Keep::read_buf`]); librbd fills it, and it gets that
    /// length once librbd reports every byte read (so it is never zeroed
    /// first, and uninitialised bytes are never exposed).
    Read(Vec<u8>),
    Write(Bytes),
    Compare(Bytes, Bytes),
}

impl Keep {
    /// An uninitialised destination for a read of `len` bytes.
    pub(crate) fn read_buf(len: usize) -> Keep {
        Keep::Read(Vec::with_capacity(len))
    }
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
    /// The length of a read ([`Op::Read`]), 0 otherwise.
    read_len: usize,
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

/// Gives a read's buffer the length `len` that librbd filled.
///
/// # Safety
/// librbd must have reported every byte of the first `len` bytes of this
/// buffer's storage written (the pointer it was given was the vector's
/// own storage).
unsafe fn filled(keep: &mut Keep, len: usize) {
    if let Keep::Read(v) = keep {
        if v.capacity() >= len {
            // SAFETY: see the function's contract; capacity checked here.
            unsafe { v.set_len(len) };
        }
    }
}

extern "C" fn on_complete(c: rbd_completion_t, arg: *mut c_void) {
    // SAFETY: `arg` is the Box<Pending> leaked by `submit` for this very
    // completion, and this is its callback.
    let (p, ret) = unsafe { reclaim::<Pending>(c, arg) };
    let Pending {
        tx,
        mut keep,
        mismatch,
        read_len,
    } = *p;
    if read_len > 0 && ret == read_len as i64 {
        // SAFETY: librbd returned the read's full length, so it wrote all
        // of the first `read_len` bytes of the buffer we gave it.
        unsafe { filled(&mut keep, read_len) };
    }
    // The receiver may be gone (command timed out): then the buffers are
    // simply dropped here, after librbd is done with them.
    let _ = tx.send(Done {
        ret,
        keep,
        mismatch,
    });
}

/// One aio operation to start.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// Into `Keep::Read`, whose capacity must hold `len` bytes.
    Read {
        off: u64,
        len: usize,
    },
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
        let read_len = match op {
            Op::Read { len, .. } => len,
            _ => 0,
        };
        let p = Box::into_raw(Box::new(Pending {
            tx,
            keep,
            mismatch: 0,
            read_len,
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
        // (a Vec's or Bytes' storage does not move with the box), which
        // the callback frees only after librbd completed the operation.
        // After the rbd_aio_* call we never dereference `p` again.
        let r: i64 = unsafe {
            let h = self.h;
            let keep = &mut (*p).keep;
            let mism: *mut u64 = &mut (*p).mismatch;
            match (op, keep) {
                (Op::Read { off, len }, Keep::Read(buf)) if buf.capacity() >= len => {
                    rbd_aio_read(h, off, len, buf.as_mut_ptr() as *mut c_char, c) as i64
                }
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

/// One request of a merged operation: its buffer (`Keep::Read` with
/// capacity for its length, or `Keep::Write`) and where its result goes.
#[derive(Debug)]
pub(crate) struct Part {
    pub keep: Keep,
    pub len: usize,
    pub tx: oneshot::Sender<Done>,
}

/// What a vectored operation keeps alive until librbd completes it: the
/// parts (their buffers) and the iovec array that points into them
/// (librbd keeps the array's address, not a copy, until completion).
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
    finish_parts(p.parts, ret);
}

/// Hands each part its share of the merged result: its own length on
/// success (a read's buffer then gets that length), else the error, or 0
/// (a short read: the caller sees a buffer shorter than asked).
fn finish_parts(parts: Vec<Part>, ret: i64) {
    let total: usize = parts.iter().map(|p| p.len).sum();
    let all = ret >= 0 && ret as usize >= total;
    for mut p in parts {
        if all {
            // SAFETY: librbd returned the merged read's full length, so it
            // wrote every byte of every iovec, and this part's iovec was
            // the first `p.len` bytes of this part's buffer.
            unsafe { filled(&mut p.keep, p.len) };
        }
        let ret = if all { p.len as i64 } else { ret.min(0) };
        let _ = p.tx.send(Done {
            ret,
            keep: p.keep,
            mismatch: 0,
        });
    }
}

impl Image {
    /// One `rbd_aio_readv` (all parts `Keep::Read`) or `rbd_aio_writev`
    /// (all `Keep::Write`) over the adjacent ranges of `parts`, starting at
    /// `off`; each part's sender gets its own result. Parts of mixed or
    /// other kinds are refused (EINVAL to each).
    pub(crate) fn submit_vectored(&self, off: u64, mut parts: Vec<Part>) {
        let write = match parts.first().map(|p| &p.keep) {
            None => return,
            Some(Keep::Write(_)) => true,
            Some(_) => false,
        };
        let fits = |p: &Part| match &p.keep {
            Keep::Read(v) => !write && v.capacity() >= p.len,
            Keep::Write(d) => write && d.len() == p.len,
            _ => false,
        };
        if !parts.iter().all(fits) {
            return finish_parts(parts, -(libc::EINVAL as i64));
        }
        let iov = parts
            .iter_mut()
            .map(|p| libc::iovec {
                iov_base: match &mut p.keep {
                    Keep::Read(v) => v.as_mut_ptr() as *mut c_void,
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
            unsafe {
                let (iovp, n) = ((*p).iov.as_ptr(), (*p).iov.len() as c_int);
                if write {
                    rbd_aio_writev(self.h, iovp, n, off, c)
                } else {
                    rbd_aio_readv(self.h, iovp, n, off, c)
                }
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
            finish_parts(p.parts, r as i64);
        }
    }
}
