//! A LUN as a Linux ublk block device (`/dev/ublkb<N>`, the kernel's
//! userspace block driver, `ublk_drv`), through the `libublk` crate; built
//! with the cargo feature `ublk` on Linux only.
//!
//! One queue of [`DEPTH`] tags; each tag's I/O runs on the queue thread's
//! local executor and is handed to the session's tokio runtime, so many
//! commands are in flight at once. Ops: READ, WRITE (FUA), FLUSH
//! (SYNCHRONIZE CACHE), DISCARD (UNMAP, when the LUN has it), WRITE_ZEROES
//! (WRITE SAME). Errors are the negative errno values of
//! [`crate::nbd::exec::errno`] (EPERM, EIO, EINVAL, ENOSPC, ESHUTDOWN), which
//! are Linux's.
//!
//! Requests run on the session's tokio runtime while the queue thread
//! sleeps in its io_uring; a completion wakes it through an eventfd that
//! the queue keeps a read pending on (one extra io slot), and hands the
//! result over a oneshot channel filled before the eventfd is written, so
//! the woken task always finds it.
//!
//! The machine CI runs on has no ublk driver: CI only builds the feature,
//! and `scripts/vm-ublk.sh` runs it under a guest kernel that has one.
//! Callers check [`available`] and fall back to NBD.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue};
use libublk::{sys, BufDesc, UblkError, UblkFlags};
use tokio::runtime::Handle;

use crate::device::ScsiDevice;
use crate::error::{Error, Result};
use crate::nbd::exec::errno;

/// The ublk control device; present when `ublk_drv` is loaded.
pub const CONTROL: &str = "/dev/ublk-control";
/// Tags (requests in flight) of the one queue.
const DEPTH: u16 = 64;
/// Largest request the kernel sends.
const IO_BUF_BYTES: u32 = 1 << 20;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;

/// Does this kernel have ublk?
pub fn available() -> bool {
    Path::new(CONTROL).exists()
}

fn ublk_err(what: &str) -> impl Fn(UblkError) -> Error + '_ {
    move |e| Error::Unsupported(format!("ublk {what}: {e}"))
}

/// Serve `dev` as a ublk device until it is stopped ([`stop`]). Blocking:
/// run it on its own thread. `ready` gets the device id N of
/// `/dev/ublkbN` once the device exists.
pub fn serve(
    dev: ScsiDevice,
    read_only: bool,
    rt: Handle,
    ready: impl FnOnce(i32) + Send + Sync + 'static,
) -> Result<()> {
    let ctrl = UblkCtrlBuilder::default()
        .name("iscsi")
        .nr_queues(1)
        .depth(DEPTH)
        .io_buf_bytes(IO_BUF_BYTES)
        .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
        .build()
        .map_err(ublk_err("add device"))?;
    let params_dev = dev.clone();
    let init = move |u: &mut UblkDev| {
        set_params(u, &params_dev, read_only);
        // The eventfd read that wakes the queue (see `Wakeup`).
        u.tgt.extra_ios = 1;
        Ok(())
    };
    let queue = move |qid: u16, u: &UblkDev| run_queue(qid, u, dev.clone(), rt.clone());
    ctrl.run_target(init, queue, move |c: &UblkCtrl| {
        ready(c.dev_info().dev_id as i32)
    })
    .map_err(ublk_err("run"))?;
    Ok(())
}

/// Stop and delete device `id`; its [`serve`] returns.
pub fn stop(id: i32) -> Result<()> {
    let c = UblkCtrl::new_simple(id).map_err(ublk_err("open"))?;
    c.kill_dev().map_err(ublk_err("stop"))?;
    c.del_dev().map_err(ublk_err("delete"))?;
    Ok(())
}

/// Size, block sizes, cache and discard parameters from the LUN.
fn set_params(u: &mut UblkDev, dev: &ScsiDevice, read_only: bool) {
    let bs = dev.block_size();
    let shift = bs.trailing_zeros() as u8;
    let size = dev.capacity().bytes();
    u.tgt.dev_size = size;
    let mut attrs = sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA;
    if read_only || dev.write_protected() {
        attrs |= sys::UBLK_ATTR_READ_ONLY;
    }
    let mut params = sys::ublk_params {
        types: sys::UBLK_PARAM_TYPE_BASIC,
        basic: sys::ublk_param_basic {
            attrs,
            logical_bs_shift: shift,
            physical_bs_shift: shift,
            io_opt_shift: shift.max(12),
            io_min_shift: shift,
            max_sectors: u.dev_info.max_io_buf_bytes >> 9,
            dev_sectors: size >> 9,
            ..Default::default()
        },
        ..Default::default()
    };
    if dev.supports_unmap() {
        params.types |= sys::UBLK_PARAM_TYPE_DISCARD;
        params.discard = sys::ublk_param_discard {
            discard_granularity: bs,
            max_discard_sectors: u32::MAX >> 9,
            max_write_zeroes_sectors: u32::MAX >> 9,
            max_discard_segments: 1,
            ..Default::default()
        };
    }
    u.tgt.params = params;
}

/// One queue thread: a task per tag on a local executor, driven by the
/// queue's io_uring.
fn run_queue(qid: u16, u: &UblkDev, dev: ScsiDevice, rt: Handle) {
    let q = match UblkQueue::new(qid, u) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            tracing::error!(error = %e, "ublk queue setup failed");
            return;
        }
    };
    let wake = match Wakeup::new() {
        Ok(w) => Arc::new(w),
        Err(e) => {
            tracing::error!(error = %e, "ublk queue: eventfd");
            return;
        }
    };
    let exe = Rc::new(smol::LocalExecutor::new());
    let waker_task = {
        let wake = wake.clone();
        exe.spawn(async move { wake.serve(DEPTH).await })
    };
    let tasks: Vec<_> = q
        .tags()
        .map(|tag| {
            let (q, dev, rt, wake) = (q.clone(), dev.clone(), rt.clone(), wake.clone());
            exe.spawn(async move {
                match io_task(&q, tag, &dev, &rt, &wake).await {
                    Ok(()) | Err(UblkError::QueueIsDown) => {}
                    Err(e) => tracing::error!(tag, error = %e, "ublk I/O task failed"),
                }
            })
        })
        .collect();
    let ticker = exe.clone();
    smol::block_on(exe.run(async move {
        let run_ops = || while ticker.try_tick() {};
        let done = || tasks.iter().all(|t| t.is_finished());
        if let Err(e) = libublk::wait_and_handle_io_events(&q, Some(20), run_ops, done).await {
            tracing::error!(error = %e, "ublk queue stopped");
        }
    }));
    drop(waker_task);
}

/// The eventfd through which requests finished on the tokio runtime wake
/// the queue thread out of its io_uring wait. Shared (`Arc`) with those
/// requests, so the fd is closed only after the last of them wrote it.
struct Wakeup {
    fd: i32,
}

// The only unsafe code of the initiator: three libc calls on an eventfd
// and a read SQE into a buffer that lives for the whole process.

#[allow(unsafe_code)]
impl Wakeup {
    fn new() -> std::io::Result<Wakeup> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Wakeup { fd })
    }

    /// Called from any thread once a request's result is in its channel.
    fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd, which is
        // open as long as `self` is.
        unsafe { libc::write(self.fd, (&one as *const u64).cast(), 8) };
    }

    /// Keeps one eventfd read pending in the queue's ring (io slot `tag`,
    /// the extra one), so that a write ends the ring's wait.
    async fn serve(&self, tag: u16) {
        // The kernel may still write into this buffer after the queue and
        // this task are gone (a read pending when the ring is torn down), so
        // it is leaked on purpose: 8 bytes per device.
        let counter: &'static mut [u8; 8] = Box::leak(Box::new([0u8; 8]));
        loop {
            let sqe =
                io_uring::opcode::Read::new(io_uring::types::Fd(self.fd), counter.as_mut_ptr(), 8)
                    .build();
            let data = libublk::io::UblkIOCtx::build_user_data_async(tag, 0, 0);
            match libublk::uring_async::ublk_submit_sqe_async(sqe, data).await {
                Ok(r) if r >= 0 => {}
                Ok(r) => {
                    tracing::debug!(errno = -r, "ublk wakeup read ended");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "ublk wakeup read not submitted");
                    return;
                }
            }
        }
    }
}

#[allow(unsafe_code)]
impl Drop for Wakeup {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}

async fn io_task(
    q: &UblkQueue<'_>,
    tag: u16,
    dev: &ScsiDevice,
    rt: &Handle,
    wake: &Arc<Wakeup>,
) -> Result<(), UblkError> {
    let mut buf = IoBuf::<u8>::new(q.dev.dev_info.max_io_buf_bytes as usize);
    q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf))
        .await?;
    loop {
        let iod = q.get_iod(tag);
        let (op_flags, sector, sectors) = (iod.op_flags, iod.start_sector, iod.nr_sectors);
        let res = handle(dev, rt, wake, op_flags, sector, sectors, buf.as_mut_slice()).await;
        q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res)
            .await?;
    }
}

/// One request: bytes done, or a negative errno.
async fn handle(
    dev: &ScsiDevice,
    rt: &Handle,
    wake: &Arc<Wakeup>,
    op_flags: u32,
    sector: u64,
    sectors: u32,
    buf: &mut [u8],
) -> i32 {
    let bs = u64::from(dev.block_size());
    let (off, len) = (sector << 9, u64::from(sectors) << 9);
    if !off.is_multiple_of(bs) || !len.is_multiple_of(bs) || len > buf.len() as u64 {
        return -EINVAL;
    }
    let (lba, blocks) = (off / bs, len / bs);
    let fua = op_flags & sys::UBLK_IO_F_FUA != 0;
    let d = dev.clone();
    let r: Result<()> = match op_flags & 0xff {
        sys::UBLK_IO_OP_READ => {
            match run(rt, wake, async move { d.read(lba, blocks as u32).await }).await {
                Ok(data) => {
                    buf[..data.len()].copy_from_slice(&data);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        sys::UBLK_IO_OP_WRITE => {
            let data = Bytes::copy_from_slice(&buf[..len as usize]);
            run(rt, wake, async move {
                d.write(lba, data, fua && d.supports_fua()).await?;
                if fua && !d.supports_fua() {
                    d.flush().await?;
                }
                Ok(())
            })
            .await
        }
        sys::UBLK_IO_OP_FLUSH => run(rt, wake, async move { d.flush().await }).await,
        sys::UBLK_IO_OP_DISCARD => {
            run(
                rt,
                wake,
                async move { d.unmap(&[(lba, blocks as u32)]).await },
            )
            .await
        }
        sys::UBLK_IO_OP_WRITE_ZEROES => {
            run(
                rt,
                wake,
                async move { d.write_zeroes(lba, blocks, true).await },
            )
            .await
        }
        _ => return -EOPNOTSUPP,
    };
    match r {
        Ok(()) => len as i32,
        Err(e) => -(errno(&e) as i32),
    }
}

/// Run `f` on the session's runtime and wait for it from the queue thread:
/// the result goes into a channel, then the eventfd `wake` is written, so
/// the queue's ring wait ends and the woken task finds the result.
async fn run<T: Send + 'static>(
    rt: &Handle,
    wake: &Arc<Wakeup>,
    f: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let wake = wake.clone();
    rt.spawn(async move {
        let _ = tx.send(f.await);
        wake.notify();
    });
    rx.await
        .unwrap_or_else(|_| Err(Error::TaskLost("ublk request task")))
}
