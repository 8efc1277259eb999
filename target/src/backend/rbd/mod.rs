//! Ceph RBD backend (cargo feature `rbd`): a LUN that lives in a RADOS
//! block device image, so that any target host with access to the cluster
//! can serve it (the model of tgt's `bs_rbd` and ceph-iscsi/tcmu-runner).
//!
//! - Data path: librbd's asynchronous API ([`AsyncIo`]): aio read, write,
//!   discard, write_zeroes, writesame, compare_and_write and flush, each
//!   completed by a librbd callback into a tokio oneshot ([`ffi`]); many
//!   requests in flight, no thread per request. Reads and writes that
//!   continue a sequential stream are merged into one librbd operation up
//!   to 1 MiB ([`merge`]): a RADOS operation costs the same CPU whatever
//!   its size, here and in the OSD. Reads are zero-copy: librbd's C++
//!   API reads into a bufferlist that references the buffers the
//!   messenger received, and each command gets a `Bytes` slice of them
//!   (`ffi::zc`). The synchronous
//!   [`Backend`] methods (used by EXTENDED COPY and SANITIZE) submit the
//!   same aio and wait for it on the blocking pool.
//! - SBC-4 semantics: capacity from the image size, which a watch on the
//!   image header keeps current (`rbd resize` by anyone: the device server
//!   then reports CAPACITY DATA HAS CHANGED, SBC-4 §4.10); UNMAP is a
//!   discard, which librbd skips below `rbd_discard_granularity_bytes`, so
//!   the LU reports that granularity (Block Limits VPD) and LBPRZ = 0
//!   (SBC-4 §4.7.3.3: unmapped blocks need not read as zero); WRITE SAME
//!   with zeros is `write_zeroes`; COMPARE AND WRITE is librbd's
//!   compare-and-write, atomic on the cluster (SBC-4 §5.3), not only in
//!   this process; GET LBA STATUS comes from `rbd_diff_iterate2` at whole
//!   object granularity (SBC-4 §5.8).
//! - Failures: every cluster operation is bounded by the LU's timeout
//!   (`rados_osd_op_timeout`, `rados_mon_op_timeout`,
//!   `client_mount_timeout`, and a tokio timeout as a safety net); a
//!   command that runs out of time fails with ABORTED COMMAND, TIMEOUT ON
//!   LOGICAL UNIT, which initiators retry ([`BackendError::Unavailable`]).
//! - Multi-gateway: a writable LU takes the image's exclusive lock
//!   explicitly (librbd then refuses to hand it to peers) and refuses to
//!   open an image whose lock another client holds, unless `shared`
//!   (docs/rbd.md).

mod ffi;
mod merge;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{AsyncIo, Backend, BackendError, IoFuture, Result};
use crate::config::RbdSpec;
use ffi::{Cluster, Done, Image, IoCtx, Keep, Op, Part};

/// Default bound on one cluster operation.
pub const DEFAULT_TIMEOUT_SECS: u32 = 20;

/// Extra time the tokio safety-net timeout allows beyond librados' own.
const GRACE: Duration = Duration::from_secs(5);

/// Client options set when the conf leaves them at Ceph's default: (key,
/// Ceph's default, ours). `librados_thread_count` 2 -> 1: with two
/// threads, librados' completion pool (`io_context_pool`) hands each
/// completion between them through a futex; one thread halves the context
/// switches per I/O of this process (2.1 -> 0.85 per 4 KiB read measured,
/// docs/bench/rbd.md) and costs ~20% less CPU per I/O. Another value in
/// the conf is kept.
const TUNING: [(&str, &str, &str); 1] = [("librados_thread_count", "2", "1")];

/// Feature bits and names (rbd/features.h).
const FEATURES: [(u64, &str); 12] = [
    (1 << 0, "layering"),
    (1 << 1, "striping"),
    (1 << 2, "exclusive-lock"),
    (1 << 3, "object-map"),
    (1 << 4, "fast-diff"),
    (1 << 5, "deep-flatten"),
    (1 << 6, "journaling"),
    (1 << 7, "data-pool"),
    (1 << 8, "operations"),
    (1 << 9, "migrating"),
    (1 << 10, "non-primary"),
    (1 << 11, "dirty-cache"),
];
const FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;

/// Names of the feature bits set in `f`.
pub fn feature_names(f: u64) -> Vec<&'static str> {
    FEATURES
        .iter()
        .filter(|(b, _)| f & b != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// An open RBD image serving one LUN.
#[derive(Debug)]
pub struct RbdBackend {
    image: Arc<Image>,
    /// Reads and writes waiting to be merged and submitted ([`merge`]).
    queue: Arc<merge::Queue>,
    spec: RbdSpec,
    size: Arc<AtomicU64>,
    object_size: u64,
    features: u64,
    discard_granularity: u64,
    read_only: bool,
    timeout: Duration,
    mon_host: String,
    lock: &'static str,
}

/// Maps a negative errno from librbd: the cluster's silence (timeouts,
/// a lost session) is [`BackendError::Unavailable`], which initiators retry.
fn rbd_error(ret: i64) -> BackendError {
    let e = ffi::errno(ret);
    match e.raw_os_error() {
        Some(libc::ETIMEDOUT) | Some(libc::ESHUTDOWN) | Some(libc::ENOTCONN) => {
            BackendError::Unavailable(format!("Ceph cluster: {e}"))
        }
        _ => BackendError::Io(e),
    }
}

/// A completion whose negative return value is the error.
fn succeeded(d: Done) -> Result<Done> {
    if d.ret < 0 {
        return Err(rbd_error(d.ret));
    }
    Ok(d)
}

/// A completion that never came (its sender was dropped).
fn dropped() -> BackendError {
    BackendError::Unavailable("librbd dropped a completion".into())
}

/// A read's bytes: exactly the `len` asked, else a short read (an error,
/// as librbd fills holes with zeros and never returns less for a range
/// inside the image).
fn read_data(d: Done, len: usize) -> Result<Bytes> {
    match d.keep {
        Keep::Data(b) if b.len() == len => Ok(b),
        _ => Err(BackendError::Io(std::io::Error::other("short RBD read"))),
    }
}

/// Waits for librbd's completion of one request, bounded by `limit` (a
/// safety net above librados' own timeouts).
async fn completion(rx: tokio::sync::oneshot::Receiver<Done>, limit: Duration) -> Result<Done> {
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(_)) => Err(dropped()),
        Err(_) => Err(BackendError::Unavailable(format!(
            "no answer from the Ceph cluster within {} s",
            limit.as_secs()
        ))),
    }
}

/// The image's exclusive lock (docs/rbd.md): none when read-only or when
/// the image has no exclusive-lock feature, cooperative when `shared`,
/// else taken, refused while another client holds it. Returns what
/// `show` reports.
fn take_lock(
    image: &Image,
    spec: &RbdSpec,
    name: &str,
    read_only: bool,
    features: u64,
) -> std::result::Result<&'static str, String> {
    Ok(if read_only {
        "none (read-only)"
    } else if features & FEATURE_EXCLUSIVE_LOCK == 0 {
        "none (image has no exclusive-lock feature)"
    } else if spec.shared {
        "cooperative (shared)"
    } else {
        let owners = image
            .lock_owners()
            .map_err(|e| format!("cannot read the lock owners of {name}: {e}"))?;
        if !owners.is_empty() {
            return Err(format!(
                "image {name} is held for writing by {} (its exclusive lock): another target \
                 or client serves it. Serve it read-only (mode=ro), stop the other writer, or \
                 allow sharing with the `shared` option (see docs/rbd.md)",
                owners.join(", ")
            ));
        }
        image.lock_exclusive().map_err(|e| {
            format!("cannot take the exclusive lock of {name}: {e} (is another writer using it?)")
        })?;
        "exclusive (held)"
    })
}

impl RbdBackend {
    /// Connects to the cluster and opens the image. Blocks (bounded by the
    /// spec's timeout). Errors name the conf file and the monitors, and
    /// say what to do.
    pub fn open(spec: &RbdSpec, read_only: bool) -> std::result::Result<RbdBackend, String> {
        let timeout = spec.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS).max(1);
        let user = spec.user.clone().unwrap_or_else(|| "admin".into());
        let conf = spec.conf.as_ref().map(|p| p.display().to_string());
        let conf_name = conf.clone().unwrap_or_else(|| {
            std::env::var("CEPH_CONF").unwrap_or_else(|_| "/etc/ceph/ceph.conf".into())
        });
        let cluster = Cluster::create(&user).map_err(|e| format!("rados_create: {e}"))?;
        cluster
            .read_conf(conf.as_deref())
            .map_err(|e| format!("cannot read Ceph config {conf_name}: {e}"))?;
        if let Some(k) = &spec.keyring {
            cluster
                .set("keyring", &k.display().to_string())
                .map_err(|e| format!("keyring {}: {e}", k.display()))?;
        }
        let t = timeout.to_string();
        for key in [
            "rados_osd_op_timeout",
            "rados_mon_op_timeout",
            "client_mount_timeout",
        ] {
            cluster.set(key, &t).map_err(|e| format!("{key}: {e}"))?;
        }
        for (key, default, ours) in TUNING {
            if cluster.get(key) == default {
                cluster.set(key, ours).map_err(|e| format!("{key}: {e}"))?;
            }
        }
        let mon_host = cluster.get("mon_host");
        let mons = if mon_host.is_empty() {
            "none configured".to_string()
        } else {
            mon_host.clone()
        };
        cluster.connect().map_err(|e| {
            format!(
                "cannot reach the Ceph cluster of {conf_name} (monitors {mons}) as client.{user} \
                 within {timeout} s: {e}; check that the monitors run and that the keyring holds \
                 client.{user}'s key"
            )
        })?;
        let cluster = Arc::new(cluster);
        let discard_granularity = cluster
            .get("rbd_discard_granularity_bytes")
            .parse::<u64>()
            .unwrap_or(64 << 10);
        let io = IoCtx::create(cluster, &spec.pool, spec.namespace.as_deref()).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                format!("no pool {:?} in the cluster of {conf_name}", spec.pool)
            } else {
                format!("pool {:?}: {e}", spec.pool)
            }
        })?;
        let name = spec.display_name();
        let image = Image::open(io, &spec.image, read_only).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                format!("no image {name} (create it: rbd create --size 1G {name})")
            } else {
                format!("cannot open image {name}: {e}")
            }
        })?;
        let st = image
            .stat()
            .map_err(|e| format!("cannot stat image {name}: {e}"))?;
        let lock = take_lock(&image, spec, &name, read_only, st.features)?;
        let image = Arc::new(image);
        let size = Arc::new(AtomicU64::new(st.size));
        watch_size(&image, &size).map_err(|e| format!("cannot watch image {name}: {e}"))?;
        Ok(RbdBackend {
            image,
            queue: Arc::default(),
            spec: spec.clone(),
            size,
            object_size: st.object_size,
            features: st.features,
            discard_granularity,
            read_only,
            timeout: Duration::from_secs(timeout as u64),
            mon_host,
            lock,
        })
    }

    /// Starts `op` and returns a future bounded by the timeout, giving
    /// librbd's completion whatever its return value.
    fn start_raw(&self, op: Op, keep: Keep) -> impl Future<Output = Result<Done>> + Send + 'static {
        completion(self.submit_in_order(op, keep), self.timeout + GRACE)
    }

    /// Submits `op` after whatever READs and WRITEs are queued for merging
    /// (they came first; [`merge`]), so that no operation overtakes them.
    fn submit_in_order(&self, op: Op, keep: Keep) -> tokio::sync::oneshot::Receiver<Done> {
        self.queue.submit(&self.image);
        self.image.submit(op, keep)
    }

    /// Starts a READ or WRITE, queued for merging when it continues a
    /// sequential stream ([`merge`]), and returns its result, a negative
    /// return value being the error. A queued request yields once; the
    /// first queued request to run again submits the whole queue.
    fn start_merged(&self, off: u64, keep: Keep, len: usize) -> impl Future<Output = Result<Done>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = match self.queue.offer(off, Part { keep, len, tx }) {
            Some(part) => {
                self.image.submit_vectored(off, vec![part]);
                None
            }
            None => Some((self.image.clone(), self.queue.clone())),
        };
        let done = completion(rx, self.timeout + GRACE);
        async move {
            if let Some((image, queue)) = queued {
                tokio::task::yield_now().await;
                queue.submit(&image);
            }
            succeeded(done.await?)
        }
    }

    /// [`Self::start_raw`], a negative return value being the error.
    fn start(&self, op: Op, keep: Keep) -> impl Future<Output = Result<Done>> + Send + 'static {
        let f = self.start_raw(op, keep);
        async move { succeeded(f.await?) }
    }

    /// A modifying operation over `[offset, offset+len)`, checked first.
    fn start_write(&self, op: Op, keep: Keep, offset: u64, len: u64) -> IoFuture<()> {
        if let Err(e) = self.writable().and_then(|_| self.check(offset, len)) {
            return Box::pin(async move { Err(e) });
        }
        let f = self.start(op, keep);
        Box::pin(async move { f.await.map(|_| ()) })
    }

    /// The blocking form of [`Self::start_write`].
    fn wait_write(&self, op: Op, keep: Keep, offset: u64, len: u64) -> Result<()> {
        self.writable()?;
        if len == 0 {
            return Ok(());
        }
        self.check(offset, len)?;
        self.wait(op, keep).map(|_| ())
    }

    /// Runs `op` to completion from a blocking context (never a runtime
    /// worker: the device server calls synchronous backend methods on the
    /// blocking pool). Bounded by `rados_osd_op_timeout`.
    fn wait(&self, op: Op, keep: Keep) -> Result<Done> {
        let rx = self.submit_in_order(op, keep);
        match rx.blocking_recv() {
            Ok(d) => succeeded(d),
            Err(_) => Err(dropped()),
        }
    }

    fn check(&self, off: u64, len: u64) -> Result<()> {
        if off.checked_add(len).is_none_or(|e| e > self.size()) {
            return Err(BackendError::OutOfRange);
        }
        Ok(())
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        Ok(())
    }

    /// Allocated extents in `[off, off+len)`, clipped to the range.
    fn extents_from(&self, off: u64, first_only: bool) -> Result<Vec<(u64, u64)>> {
        let size = self.size();
        let mut v = Vec::new();
        if off >= size {
            return Ok(v);
        }
        self.image
            .allocated(off, size - off, &mut |o, l| {
                v.push((o, l));
                !first_only
            })
            .map_err(|e| rbd_error(-(e.raw_os_error().unwrap_or(libc::EIO) as i64)))?;
        Ok(v)
    }
}

/// Keeps `size` equal to the image size: librbd calls the watch when the
/// header changes; a thread (one per image, not per request) then reads
/// the new size, which may need the cluster, off librbd's callback thread.
fn watch_size(image: &Arc<Image>, size: &Arc<AtomicU64>) -> std::io::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    image.watch(move || {
        let _ = tx.send(());
    })?;
    let weak = Arc::downgrade(image);
    let size = size.clone();
    std::thread::Builder::new()
        .name("rbd-watch".into())
        .spawn(move || {
            // Ends when the image closes (its watch, and so `tx`, is dropped).
            while rx.recv().is_ok() {
                while rx.try_recv().is_ok() {}
                let Some(img) = weak.upgrade() else { break };
                match img.size() {
                    Ok(s) => {
                        let old = size.swap(s, Ordering::AcqRel);
                        if old != s {
                            tracing::info!(old, new = s, "RBD image resized");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "RBD image size refresh failed"),
                }
            }
        })?;
    Ok(())
}

impl Backend for RbdBackend {
    fn kind(&self) -> &'static str {
        "rbd"
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.check(offset, buf.len() as u64)?;
        let len = buf.len();
        // Behind whatever is queued for merging, as in `wait`.
        self.queue.submit(&self.image);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let part = Part {
            keep: Keep::Read,
            len,
            tx,
        };
        self.image.submit_vectored(offset, vec![part]);
        let d = match rx.blocking_recv() {
            Ok(d) => succeeded(d)?,
            Err(_) => return Err(dropped()),
        };
        buf.copy_from_slice(&read_data(d, len)?);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let keep = Keep::Write(Bytes::copy_from_slice(buf));
        self.wait_write(Op::Write { off: offset }, keep, offset, buf.len() as u64)
    }

    fn flush(&self) -> Result<()> {
        self.wait(Op::Flush, Keep::None).map(|_| ())
    }

    fn supports_unmap(&self) -> bool {
        !self.read_only
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        self.wait_write(Op::Discard { off: offset, len }, Keep::None, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.wait_write(
            Op::WriteZeroes { off: offset, len },
            Keep::None,
            offset,
            len,
        )
    }

    fn seek_data(&self, offset: u64) -> Result<Option<u64>> {
        Ok(self
            .extents_from(offset, true)?
            .first()
            .map(|&(o, _)| o.max(offset)))
    }

    fn seek_hole(&self, offset: u64) -> Result<u64> {
        let size = self.size();
        let mut pos = offset;
        for (o, l) in self.extents_from(offset, false)? {
            if o > pos {
                break;
            }
            pos = pos.max(o + l);
        }
        Ok(pos.min(size))
    }

    fn aio(&self) -> Option<&dyn AsyncIo> {
        Some(self)
    }

    fn unmap_granularity(&self) -> u64 {
        self.discard_granularity
    }

    fn unmap_reads_zero(&self) -> bool {
        false
    }

    fn info(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "image": self.spec.display_name(),
            "size_bytes": self.size(),
            "object_size": self.object_size,
            "features": feature_names(self.features),
            "conf": self.spec.conf.as_ref().map(|p| p.display().to_string()),
            "user": self.spec.user.clone().unwrap_or_else(|| "admin".into()),
            "monitors": self.mon_host,
            "lock": self.lock,
            "timeout_secs": self.timeout.as_secs(),
            "discard_granularity": self.discard_granularity,
            "merged_requests": self.queue.merged(),
            "reads_zero_copy": self.image.read_stats().0,
            "reads_copied": self.image.read_stats().1,
        }))
    }
}

impl AsyncIo for RbdBackend {
    fn read(&self, offset: u64, len: usize) -> IoFuture<Bytes> {
        if let Err(e) = self.check(offset, len as u64) {
            return Box::pin(async move { Err(e) });
        }
        let f = self.start_merged(offset, Keep::Read, len);
        Box::pin(async move { read_data(f.await?, len) })
    }

    fn write(&self, offset: u64, data: Bytes) -> IoFuture<()> {
        let len = data.len();
        if let Err(e) = self.writable().and_then(|_| self.check(offset, len as u64)) {
            return Box::pin(async move { Err(e) });
        }
        let f = self.start_merged(offset, Keep::Write(data), len);
        Box::pin(async move { f.await.map(|_| ()) })
    }

    fn flush(&self) -> IoFuture<()> {
        let f = self.start(Op::Flush, Keep::None);
        Box::pin(async move { f.await.map(|_| ()) })
    }

    fn discard(&self, offset: u64, len: u64) -> IoFuture<()> {
        self.start_write(Op::Discard { off: offset, len }, Keep::None, offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> IoFuture<()> {
        self.start_write(
            Op::WriteZeroes { off: offset, len },
            Keep::None,
            offset,
            len,
        )
    }

    fn write_same(&self, offset: u64, len: u64, block: Bytes) -> IoFuture<()> {
        if block.is_empty() || !len.is_multiple_of(block.len() as u64) {
            return Box::pin(async { Err(BackendError::Unsupported) });
        }
        self.start_write(
            Op::WriteSame { off: offset, len },
            Keep::Write(block),
            offset,
            len,
        )
    }

    fn compare_and_write(
        &self,
        offset: u64,
        expected: Bytes,
        data: Bytes,
    ) -> IoFuture<Option<u64>> {
        let len = data.len() as u64;
        let ok = self.writable().and_then(|_| self.check(offset, len));
        if let Err(e) = ok {
            return Box::pin(async move { Err(e) });
        }
        // librbd refuses (EINVAL) a compare-and-write across an object
        // boundary: the caller then falls back to its own range lock.
        let os = self.object_size.max(1);
        if expected.len() != data.len() || len == 0 || offset / os != (offset + len - 1) / os {
            return Box::pin(async { Err(BackendError::Unsupported) });
        }
        let f = self.start_raw(
            Op::CompareAndWrite { off: offset },
            Keep::Compare(expected, data),
        );
        Box::pin(async move {
            let d = f.await?;
            match d.ret {
                r if r >= 0 => Ok(None),
                // librbd: EILSEQ with the offset of the first differing
                // byte. librbd 1.16 (Pacific) gives it relative to the
                // request (measured); later releases give the image offset.
                r if r == -(libc::EILSEQ as i64) => Ok(Some(if d.mismatch < len {
                    d.mismatch
                } else {
                    d.mismatch.saturating_sub(offset).min(len - 1)
                })),
                r if r == -(libc::EINVAL as i64) => Err(BackendError::Unsupported),
                r => Err(rbd_error(r)),
            }
        })
    }
}

#[cfg(test)]
mod tests;
