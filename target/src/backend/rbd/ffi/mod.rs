//! A small hand-written FFI over the C APIs of librados (`rados/librados.h`)
//! and librbd (`rbd/librbd.h`, librbd 1.16 / Ceph 16.2 "Pacific"): the
//! declarations this backend uses, and safe wrappers that own the handles.
//!
//! Asynchronous I/O: every `rbd_aio_*` call gets a completion whose
//! callback argument is a leaked `Box<Pending>`. The box owns the buffers
//! librbd reads from or writes into (and the mismatch offset of COMPARE AND
//! WRITE), so they live exactly as long as librbd may touch them, even when
//! the waiting command gave up (timeout) and dropped its receiver. librbd
//! calls the callback once, on one of its own threads; the callback takes
//! the box back and sends the result into tokio through a oneshot channel.
//! No thread ever blocks per request.
//!
//! Reads go through a small C++ shim instead ([`zc`]): librbd's C API can
//! only copy a read's data into our buffer, its C++ API can hand back
//! references to the buffers it received.
//!
//! Everything `unsafe` in the RBD backend is in this module (this file,
//! `aio.rs`, `zc.rs`), each block with the reason it is sound.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::sync::Arc;

use crate::sync::lock;

#[allow(non_camel_case_types)]
type rados_t = *mut c_void;
#[allow(non_camel_case_types)]
type rados_ioctx_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_image_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_completion_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_callback_t = extern "C" fn(rbd_completion_t, *mut c_void);
#[allow(non_camel_case_types)]
type rbd_update_callback_t = extern "C" fn(*mut c_void);
#[allow(non_camel_case_types)]
type diff_cb_t = extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int;

/// `rbd_image_info_t` (librbd.h).
#[repr(C)]
struct RbdImageInfo {
    size: u64,
    obj_size: u64,
    num_objs: u64,
    order: c_int,
    block_name_prefix: [c_char; 24],
    parent_pool: i64,
    parent_name: [c_char; 96],
}

const RBD_LOCK_MODE_EXCLUSIVE: c_int = 0;

#[link(name = "rados")]
extern "C" {
    fn rados_create2(
        cluster: *mut rados_t,
        cluster_name: *const c_char,
        name: *const c_char,
        flags: u64,
    ) -> c_int;
    fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    fn rados_conf_get(
        cluster: rados_t,
        option: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
    fn rados_connect(cluster: rados_t) -> c_int;
    fn rados_shutdown(cluster: rados_t);
    fn rados_ioctx_create(cluster: rados_t, pool: *const c_char, io: *mut rados_ioctx_t) -> c_int;
    fn rados_ioctx_destroy(io: rados_ioctx_t);
    fn rados_ioctx_set_namespace(io: rados_ioctx_t, ns: *const c_char);
}

#[link(name = "rbd")]
extern "C" {
    fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap: *const c_char,
    ) -> c_int;
    fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap: *const c_char,
    ) -> c_int;
    fn rbd_close(image: rbd_image_t) -> c_int;
    fn rbd_stat(image: rbd_image_t, info: *mut RbdImageInfo, infosize: usize) -> c_int;
    fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    fn rbd_get_features(image: rbd_image_t, features: *mut u64) -> c_int;
    fn rbd_lock_acquire(image: rbd_image_t, mode: c_int) -> c_int;
    fn rbd_lock_get_owners(
        image: rbd_image_t,
        mode: *mut c_int,
        owners: *mut *mut c_char,
        max: *mut usize,
    ) -> c_int;
    fn rbd_lock_get_owners_cleanup(owners: *mut *mut c_char, count: usize);
    fn rbd_update_watch(
        image: rbd_image_t,
        handle: *mut u64,
        cb: rbd_update_callback_t,
        arg: *mut c_void,
    ) -> c_int;
    fn rbd_update_unwatch(image: rbd_image_t, handle: u64) -> c_int;
    fn rbd_diff_iterate2(
        image: rbd_image_t,
        fromsnap: *const c_char,
        ofs: u64,
        len: u64,
        include_parent: u8,
        whole_object: u8,
        cb: diff_cb_t,
        arg: *mut c_void,
    ) -> c_int;
    fn rbd_aio_create_completion(
        arg: *mut c_void,
        cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_get_return_value(c: rbd_completion_t) -> isize;
    fn rbd_aio_release(c: rbd_completion_t);
    fn rbd_aio_write(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *const c_char,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_discard(image: rbd_image_t, off: u64, len: u64, c: rbd_completion_t) -> c_int;
    fn rbd_aio_write_zeroes(
        image: rbd_image_t,
        off: u64,
        len: usize,
        c: rbd_completion_t,
        zero_flags: c_int,
        op_flags: c_int,
    ) -> c_int;
    fn rbd_aio_writesame(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *const c_char,
        data_len: usize,
        c: rbd_completion_t,
        op_flags: c_int,
    ) -> c_int;
    fn rbd_aio_compare_and_write(
        image: rbd_image_t,
        off: u64,
        len: usize,
        cmp_buf: *const c_char,
        buf: *const c_char,
        c: rbd_completion_t,
        mismatch_off: *mut u64,
        op_flags: c_int,
    ) -> isize;
    fn rbd_aio_flush(image: rbd_image_t, c: rbd_completion_t) -> c_int;
    fn rbd_aio_writev(
        image: rbd_image_t,
        iov: *const libc::iovec,
        iovcnt: c_int,
        off: u64,
        c: rbd_completion_t,
    ) -> c_int;
}

/// A negative errno from librados/librbd as an `io::Error`.
pub(crate) fn errno(r: i64) -> io::Error {
    io::Error::from_raw_os_error(r.unsigned_abs().min(i32::MAX as u64) as i32)
}

fn cstr(what: &str, s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// A connected RADOS cluster handle (`rados_t`).
#[derive(Debug)]
pub(crate) struct Cluster {
    h: rados_t,
}

// SAFETY: librados cluster handles are thread-safe (librados.h: "the
// functions are thread-safe" for one rados_t shared by threads); we only
// move and share the pointer, librados synchronises internally.
unsafe impl Send for Cluster {}
// SAFETY: as above.
unsafe impl Sync for Cluster {}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: `h` came from rados_create2 and is shut down once, here;
        // every IoCtx holds an Arc<Cluster>, so none outlives it.
        unsafe { rados_shutdown(self.h) }
    }
}

impl Cluster {
    /// `rados_create2` for `client.USER` (cluster name "ceph").
    pub(crate) fn create(user: &str) -> io::Result<Cluster> {
        let name = cstr("user", &format!("client.{user}"))?;
        let cluster = c"ceph";
        let mut h: rados_t = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings that outlive the call and a
        // valid out pointer; librados copies the strings.
        let r = unsafe { rados_create2(&mut h, cluster.as_ptr(), name.as_ptr(), 0) };
        if r < 0 {
            return Err(errno(r as i64));
        }
        Ok(Cluster { h })
    }

    /// `rados_conf_read_file`; `None` reads the default search path.
    pub(crate) fn read_conf(&self, path: Option<&str>) -> io::Result<()> {
        let p = path.map(|p| cstr("conf path", p)).transpose()?;
        // SAFETY: `h` is a live, not yet connected handle; the path is a
        // valid C string or NULL (librados then searches the defaults).
        let r = unsafe {
            rados_conf_read_file(self.h, p.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
        };
        if r < 0 {
            return Err(errno(r as i64));
        }
        Ok(())
    }

    /// `rados_conf_set`.
    pub(crate) fn set(&self, key: &str, value: &str) -> io::Result<()> {
        let (k, v) = (cstr("option", key)?, cstr("value", value)?);
        // SAFETY: live handle, valid C strings copied by librados.
        let r = unsafe { rados_conf_set(self.h, k.as_ptr(), v.as_ptr()) };
        if r < 0 {
            return Err(errno(r as i64));
        }
        Ok(())
    }

    /// `rados_conf_get`, empty when unset.
    pub(crate) fn get(&self, key: &str) -> String {
        let Ok(k) = cstr("option", key) else {
            return String::new();
        };
        let mut buf = vec![0 as c_char; 1024];
        // SAFETY: `buf` is writable for `buf.len()` bytes; librados writes a
        // NUL-terminated string of at most that length or fails.
        let r = unsafe { rados_conf_get(self.h, k.as_ptr(), buf.as_mut_ptr(), buf.len()) };
        if r < 0 {
            return String::new();
        }
        // SAFETY: on success the buffer holds a NUL-terminated string.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    /// `rados_connect` (bounded by `client_mount_timeout`).
    pub(crate) fn connect(&self) -> io::Result<()> {
        // SAFETY: live handle; connect blocks until the monitors answer or
        // the mount timeout expires.
        let r = unsafe { rados_connect(self.h) };
        if r < 0 {
            return Err(errno(r as i64));
        }
        Ok(())
    }
}

/// An I/O context on one pool (and namespace).
#[derive(Debug)]
pub(crate) struct IoCtx {
    h: rados_ioctx_t,
    _cluster: Arc<Cluster>,
}

// SAFETY: an ioctx may be used from several threads for I/O (librados
// documents only the namespace/snap setters as not thread-safe, and we call
// them before sharing it).
unsafe impl Send for IoCtx {}
// SAFETY: as above.
unsafe impl Sync for IoCtx {}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: `h` came from rados_ioctx_create; the cluster is still
        // alive (we hold an Arc); images opened on it were closed first
        // (Image holds the IoCtx and closes before dropping it).
        unsafe { rados_ioctx_destroy(self.h) }
    }
}

impl IoCtx {
    pub(crate) fn create(cluster: Arc<Cluster>, pool: &str, ns: Option<&str>) -> io::Result<IoCtx> {
        let p = cstr("pool", pool)?;
        let mut h: rados_ioctx_t = std::ptr::null_mut();
        // SAFETY: connected cluster handle, valid C string, valid out pointer.
        let r = unsafe { rados_ioctx_create(cluster.h, p.as_ptr(), &mut h) };
        if r < 0 {
            return Err(errno(r as i64));
        }
        let io = IoCtx {
            h,
            _cluster: cluster,
        };
        if let Some(ns) = ns {
            let n = cstr("namespace", ns)?;
            // SAFETY: the ioctx is not shared yet; librados copies the name.
            unsafe { rados_ioctx_set_namespace(io.h, n.as_ptr()) };
        }
        Ok(io)
    }
}

/// Static facts about an open image.
#[derive(Debug, Clone)]
pub(crate) struct ImageStat {
    pub size: u64,
    pub object_size: u64,
    pub features: u64,
}

/// An open RBD image. librbd image handles are safe for concurrent aio
/// submission from many threads.
#[derive(Debug)]
pub(crate) struct Image {
    h: rbd_image_t,
    /// The update watch: handle and the leaked callback argument.
    watch: std::sync::Mutex<Option<(u64, *mut WatchArg)>>,
    /// How reads were served ([`zc`]).
    reads: Arc<ReadStats>,
    _io: IoCtx,
}

// SAFETY: librbd serialises access to an image internally (ImageCtx locks);
// aio calls from several threads on one handle are its normal use (qemu,
// tcmu-runner). The watch pointer is only touched under the mutex.
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

type WatchArg = Box<dyn Fn() + Send + Sync>;

impl Drop for Image {
    fn drop(&mut self) {
        self.unwatch();
        // SAFETY: `h` came from rbd_open*; closing waits for in-flight aio
        // (whose callbacks own their buffers), after which nothing uses `h`.
        unsafe { rbd_close(self.h) };
    }
}

/// The callback half of [`Image::watch`].
extern "C" fn on_update(arg: *mut c_void) {
    // SAFETY: `arg` is the `*mut WatchArg` leaked in `watch`; it stays valid
    // until `unwatch` has returned from rbd_update_unwatch, after which
    // librbd calls no more callbacks for this handle.
    let f = unsafe { &*(arg as *const WatchArg) };
    f();
}

impl Image {
    pub(crate) fn open(io: IoCtx, name: &str, read_only: bool) -> io::Result<Image> {
        let n = cstr("image name", name)?;
        let mut h: rbd_image_t = std::ptr::null_mut();
        // SAFETY: live ioctx, valid C string, valid out pointer, no snapshot.
        let r = unsafe {
            if read_only {
                rbd_open_read_only(io.h, n.as_ptr(), &mut h, std::ptr::null())
            } else {
                rbd_open(io.h, n.as_ptr(), &mut h, std::ptr::null())
            }
        };
        if r < 0 {
            return Err(errno(r as i64));
        }
        Ok(Image {
            h,
            watch: std::sync::Mutex::new(None),
            reads: Arc::default(),
            _io: io,
        })
    }

    pub(crate) fn stat(&self) -> io::Result<ImageStat> {
        // SAFETY: the struct is plain data, zero is a valid bit pattern.
        let mut info: RbdImageInfo = unsafe { std::mem::zeroed() };
        let mut features = 0u64;
        // SAFETY: live image; out pointers to owned, correctly sized values.
        let r = unsafe { rbd_stat(self.h, &mut info, std::mem::size_of::<RbdImageInfo>()) };
        if r < 0 {
            return Err(errno(r as i64));
        }
        // SAFETY: as above.
        let r = unsafe { rbd_get_features(self.h, &mut features) };
        if r < 0 {
            return Err(errno(r as i64));
        }
        Ok(ImageStat {
            size: info.size,
            object_size: info.obj_size,
            features,
        })
    }

    /// `rbd_get_size` (refreshes the header first when a peer changed it;
    /// may block on the cluster).
    /// How reads were served so far: (slices of librbd's buffers, copies).
    pub(crate) fn read_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.reads.zero_copy.load(Relaxed),
            self.reads.copied.load(Relaxed),
        )
    }

    pub(crate) fn size(&self) -> io::Result<u64> {
        let mut s = 0u64;
        // SAFETY: live image, valid out pointer.
        let r = unsafe { rbd_get_size(self.h, &mut s) };
        if r < 0 {
            return Err(errno(r as i64));
        }
        Ok(s)
    }

    /// Clients holding the image's exclusive lock (empty: none).
    pub(crate) fn lock_owners(&self) -> io::Result<Vec<String>> {
        let mut mode: c_int = 0;
        let mut owners: [*mut c_char; 8] = [std::ptr::null_mut(); 8];
        let mut n = owners.len();
        // SAFETY: live image; `owners` has room for `n` pointers, librbd
        // fills at most `n` and sets `n` to the count.
        let r = unsafe { rbd_lock_get_owners(self.h, &mut mode, owners.as_mut_ptr(), &mut n) };
        if r == -libc::ENOENT {
            return Ok(Vec::new());
        }
        if r < 0 {
            return Err(errno(r as i64));
        }
        let n = n.min(owners.len());
        let v = owners[..n]
            .iter()
            .filter(|p| !p.is_null())
            // SAFETY: librbd returned `n` NUL-terminated strings.
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect();
        // SAFETY: frees exactly the `n` strings librbd allocated above.
        unsafe { rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), n) };
        Ok(v)
    }

    /// Takes the exclusive lock explicitly: librbd then refuses peers'
    /// requests to hand it over (they get EROFS on writes).
    pub(crate) fn lock_exclusive(&self) -> io::Result<()> {
        // SAFETY: live image.
        let r = unsafe { rbd_lock_acquire(self.h, RBD_LOCK_MODE_EXCLUSIVE) };
        if r < 0 {
            return Err(errno(r as i64));
        }
        Ok(())
    }

    /// Calls `f` (on a librbd thread) whenever the image header changes
    /// (resize, features, lock). `f` must not call back into librbd.
    pub(crate) fn watch(&self, f: impl Fn() + Send + Sync + 'static) -> io::Result<()> {
        let arg: *mut WatchArg = Box::into_raw(Box::new(Box::new(f)));
        let mut handle = 0u64;
        // SAFETY: live image; `arg` stays valid until `unwatch` frees it
        // after unregistering.
        let r = unsafe { rbd_update_watch(self.h, &mut handle, on_update, arg as *mut c_void) };
        if r < 0 {
            // SAFETY: not registered, so nobody else holds `arg`.
            drop(unsafe { Box::from_raw(arg) });
            return Err(errno(r as i64));
        }
        *lock(&self.watch) = Some((handle, arg));
        Ok(())
    }

    fn unwatch(&self) {
        let w = lock(&self.watch).take();
        if let Some((handle, arg)) = w {
            // SAFETY: `handle` is our registered watch; rbd_update_unwatch
            // waits for callbacks in progress, so afterwards `arg` is ours
            // alone and freed once.
            unsafe {
                rbd_update_unwatch(self.h, handle);
                drop(Box::from_raw(arg));
            }
        }
    }

    /// Allocated extents in `[off, off+len)` at whole-object granularity
    /// (`rbd_diff_iterate2` from the image's creation, parent included).
    /// `f` gets (offset, length) of each allocated extent in order and
    /// returns false to stop. Blocks on the cluster.
    pub(crate) fn allocated(
        &self,
        off: u64,
        len: u64,
        f: &mut dyn FnMut(u64, u64) -> bool,
    ) -> io::Result<()> {
        struct Arg<'a> {
            f: &'a mut dyn FnMut(u64, u64) -> bool,
            stopped: bool,
        }
        extern "C" fn cb(o: u64, l: usize, exists: c_int, arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the `Arg` on the caller's stack, alive for
            // the whole synchronous rbd_diff_iterate2 call.
            let a = unsafe { &mut *(arg as *mut Arg) };
            if exists != 0 && !(a.f)(o, l as u64) {
                a.stopped = true;
                return -libc::ECANCELED;
            }
            0
        }
        let mut a = Arg { f, stopped: false };
        // SAFETY: live image; the callback and its argument are valid for
        // the duration of this synchronous call.
        let r = unsafe {
            rbd_diff_iterate2(
                self.h,
                std::ptr::null(),
                off,
                len,
                1,
                1,
                cb,
                &mut a as *mut Arg as *mut c_void,
            )
        };
        if r < 0 && !(a.stopped && r == -libc::ECANCELED) {
            return Err(errno(r as i64));
        }
        Ok(())
    }
}

mod aio;
mod zc;
pub(crate) use aio::{Done, Keep, Op, Part};
pub(crate) use zc::ReadStats;
