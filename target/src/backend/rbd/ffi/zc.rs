//! Zero-copy reads: every READ (merged or not, and the blocking path) is
//! one `librbd::Image::aio_read2` into a `ceph::bufferlist`, through the
//! C++ shim `zc_read.cc` (built by `target/build.rs`). librbd then hands
//! back references to the buffers the messenger received from the OSDs
//! instead of copying them into ours, as `rbd_aio_read`/`readv` do (that
//! copy was ~22 µs of the target's ~100 µs of CPU per 128 KiB read).
//!
//! On completion the shim gives us the list's segments and an owner
//! handle; [`ReadData`] wraps each segment as a [`Bytes`] whose owner
//! (shared through an `Arc`) frees the bufferlist once the last slice is
//! dropped, on whatever thread that happens. A command whose range lies in
//! one segment gets a slice of it, with no copy; one that spans segments
//! (an object boundary inside it, zeros librbd appended for a hole, a
//! merged read split at a point that is no segment boundary) gets a copy
//! of its own bytes only, counted in [`ReadStats`] (`iscsi target show`:
//! `reads_zero_copy`, `reads_copied`).

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// `rbdzc_seg` (zc_read.cc): one `buffer::ptr` of the result.
#[repr(C)]
struct Seg {
    ptr: *const u8,
    len: usize,
}

/// `rbdzc_done_t` (zc_read.cc).
type DoneFn =
    extern "C" fn(arg: *mut c_void, ret: i64, owner: *mut c_void, segs: *const Seg, n: usize);

extern "C" {
    /// 0: `done` will be called exactly once with `arg`; < 0 (-errno):
    /// it will not. Never unwinds (the shim catches C++ exceptions).
    fn rbdzc_aio_read(
        image: *mut c_void,
        off: u64,
        len: usize,
        done: DoneFn,
        arg: *mut c_void,
    ) -> c_int;
    /// Frees an owner handed to `done`; any thread, once.
    fn rbdzc_release(owner: *mut c_void);
}

/// Counters of how commands got their bytes.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    /// Commands served by a slice of librbd's buffer (no copy).
    pub zero_copy: AtomicU64,
    /// Commands whose range spanned several segments: copied.
    pub copied: AtomicU64,
}

/// The bufferlist holding one read's result (the shim's `Req`).
#[derive(Debug)]
struct Owner(*mut c_void);

// SAFETY: the owner is released exactly once (Drop), from any thread:
// ceph::buffer's reference counts are atomic, and nothing else holds the
// Req (the shim touched it last before calling `done`).
unsafe impl Send for Owner {}
// SAFETY: `&Owner` gives no access to the list at all.
unsafe impl Sync for Owner {}

impl Drop for Owner {
    fn drop(&mut self) {
        // SAFETY: `self.0` is the owner the shim handed to `done`, released
        // only here, once.
        unsafe { rbdzc_release(self.0) }
    }
}

/// One segment of a result, kept alive by its owner.
struct Segment {
    _owner: Arc<Owner>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer is into a ceph buffer that the owner keeps alive and
// that nobody writes to any more (librbd completed the read and keeps only
// references; the header's note on cache buffers concerns a caller that
// would write into them, which Bytes never does). Reading it from any
// thread is fine.
unsafe impl Send for Segment {}

impl AsRef<[u8]> for Segment {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` is non-null (a non-empty buffer::ptr's c_str()) and
        // valid for `len` bytes while `_owner` lives, which is as long as
        // `self`; the bytes are never written (see `Send`).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A read's result: its segments in order, each a [`Bytes`] over
/// librbd's buffer.
#[derive(Debug, Default)]
pub(crate) struct ReadData {
    segs: Vec<Bytes>,
}

impl ReadData {
    /// Takes ownership of the shim's `owner` (freed when the last segment
    /// is dropped, or at once when there is none).
    ///
    /// # Safety
    /// `owner`, `segs` and `n` must be what the shim passed to `done`,
    /// from inside that call.
    unsafe fn adopt(owner: *mut c_void, segs: *const Seg, n: usize) -> ReadData {
        let owner = Arc::new(Owner(owner));
        let segs = if n == 0 || segs.is_null() {
            &[][..]
        } else {
            // SAFETY: the shim's array of `n` segments, valid during `done`.
            unsafe { std::slice::from_raw_parts(segs, n) }
        };
        ReadData {
            segs: segs
                .iter()
                .filter(|s| s.len > 0 && !s.ptr.is_null())
                .map(|s| {
                    Bytes::from_owner(Segment {
                        _owner: owner.clone(),
                        ptr: s.ptr,
                        len: s.len,
                    })
                })
                .collect(),
        }
    }

    /// Bytes in the result.
    pub(crate) fn len(&self) -> usize {
        self.segs.iter().map(|s| s.len()).sum()
    }

    /// The bytes `[at, at + len)`: a slice of one segment when they lie in
    /// one (no copy), else a copy of just these bytes. Counted in `stats`.
    /// The caller keeps the range within [`Self::len`].
    pub(crate) fn range(&self, at: usize, len: usize, stats: &ReadStats) -> Bytes {
        let mut start = 0usize;
        let mut first = None;
        for (i, s) in self.segs.iter().enumerate() {
            if at < start + s.len() {
                first = Some((i, at - start));
                break;
            }
            start += s.len();
        }
        let Some((i, skip)) = first else {
            return Bytes::new();
        };
        if skip + len <= self.segs[i].len() {
            stats.zero_copy.fetch_add(1, Ordering::Relaxed);
            return self.segs[i].slice(skip..skip + len);
        }
        stats.copied.fetch_add(1, Ordering::Relaxed);
        let mut out = BytesMut::with_capacity(len);
        let mut skip = skip;
        for s in &self.segs[i..] {
            let take = (s.len() - skip).min(len - out.len());
            out.extend_from_slice(&s[skip..skip + take]);
            skip = 0;
            if out.len() == len {
                break;
            }
        }
        out.freeze()
    }
}

extern "C" fn on_read_done<F: FnOnce(i64, ReadData)>(
    arg: *mut c_void,
    ret: i64,
    owner: *mut c_void,
    segs: *const Seg,
    n: usize,
) {
    // SAFETY: `arg` is the Box<F> leaked by `aio_read` (which passed this
    // very instance of the function), and the shim calls it once per
    // successful submission; the other arguments are the shim's, used from
    // inside this call.
    let (f, data) = unsafe {
        (
            Box::from_raw(arg as *mut F),
            ReadData::adopt(owner, segs, n),
        )
    };
    f(ret, data);
}

/// Starts a read of `len` bytes at `off` of `image` into a bufferlist;
/// `f` gets librbd's return value and the result once librbd completes
/// it, on a librbd thread, or at once, with the negative errno and no
/// data, if the shim could not submit it.
///
/// # Safety
/// `image` must be an open `rbd_image_t` that stays open until the read
/// completes (closing an image waits for its in-flight aio).
pub(crate) unsafe fn aio_read<F: FnOnce(i64, ReadData) + Send + 'static>(
    image: *mut c_void,
    off: u64,
    len: usize,
    f: F,
) {
    let arg = Box::into_raw(Box::new(f));
    // SAFETY: see the function's contract for `image`; `arg` is a leaked
    // box that `on_read_done::<F>` takes back exactly once.
    let r = unsafe { rbdzc_aio_read(image, off, len, on_read_done::<F>, arg as *mut c_void) };
    if r < 0 {
        // SAFETY: not submitted: the callback will not run, the box is ours.
        let f = unsafe { Box::from_raw(arg) };
        f(r as i64, ReadData::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(parts: &[&[u8]]) -> ReadData {
        ReadData {
            segs: parts.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
        }
    }

    #[test]
    fn ranges_inside_a_segment_are_slices_others_are_copied() {
        let d = data(&[b"abcd", b"efgh", b"ij"]);
        let s = ReadStats::default();
        assert_eq!(d.len(), 10);
        let r = d.range(4, 4, &s);
        assert_eq!(&r[..], b"efgh");
        assert_eq!(r.as_ptr(), d.segs[1].as_ptr(), "a slice, not a copy");
        assert_eq!(&d.range(1, 2, &s)[..], b"bc");
        assert_eq!(s.zero_copy.load(Ordering::Relaxed), 2);
        assert_eq!(&d.range(2, 7, &s)[..], b"cdefghi");
        assert_eq!(&d.range(3, 7, &s)[..], b"defghij");
        assert_eq!(s.copied.load(Ordering::Relaxed), 2);
        assert!(d.range(10, 1, &s).is_empty());
    }
}
