//! The mixed workload the fault scenarios run: worker threads that write,
//! read back, flush and discard through a [`BlockIo`] (our NBD export via
//! the `nbd` crate's client, or the initiator's `ScsiDevice` directly), each
//! in its own region of the disk so that its [`Verifier`] knows exactly
//! what every block must hold after every acknowledged operation.
//!
//! A write that fails is recorded as uncertain (old or new content are both
//! acceptable there until overwritten); a write that succeeded must be
//! readable afterwards, whatever the faults in between: that is the "no lost
//! acknowledged write" check. Every operation is bounded in time
//! ([`Workload::op_timeout`]); one that takes longer counts as a hang.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::verify::{Audit, Unwritten, Verifier};

/// One worker's handle on the disk under test (each worker thread owns one;
/// every call is blocking and must itself be bounded in time).
pub trait BlockIo: Send {
    /// Read `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write `data` at `offset`; `Ok` means acknowledged.
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make acknowledged writes durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Discard `len` bytes at `offset` (content unspecified afterwards).
    /// `Ok(false)`: the device does not support discards.
    fn trim(&mut self, offset: u64, len: u64) -> io::Result<bool>;
}

/// Opens one [`BlockIo`] per worker (and one for the final audit).
pub type Opener = Arc<dyn Fn() -> io::Result<Box<dyn BlockIo>> + Send + Sync>;

/// What to run.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Worker threads, each in its own region.
    pub workers: usize,
    /// How long the workers keep issuing operations.
    pub duration: Duration,
    /// Bytes of the disk the workload uses (split evenly between workers).
    pub size: u64,
    /// Alignment and unit of every operation (a multiple of the LUN's
    /// logical block size).
    pub block_size: usize,
    /// Largest single operation, bytes.
    pub max_io: usize,
    /// Bound on one operation: longer counts as a hung I/O path.
    pub op_timeout: Duration,
    pub seed: u64,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            workers: 4,
            duration: Duration::from_secs(15),
            size: 32 << 20,
            block_size: 4096,
            max_io: 128 << 10,
            op_timeout: Duration::from_secs(60),
            seed: 1,
        }
    }
}

/// Counts of what the workers did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub trims: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Operations that returned an error.
    pub errors: u64,
    /// Reads (during the run) whose data did not match the record.
    pub read_mismatches: u64,
}

impl OpCounts {
    fn merge(&mut self, o: &OpCounts) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.flushes += o.flushes;
        self.trims += o.trims;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
        self.errors += o.errors;
        self.read_mismatches += o.read_mismatches;
    }

    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.flushes + self.trims
    }
}

impl std::fmt::Display for OpCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writes ({} MiB), {} reads ({} MiB), {} flushes, {} trims, {} errors, {} read mismatches",
            self.writes,
            self.bytes_written >> 20,
            self.reads,
            self.bytes_read >> 20,
            self.flushes,
            self.trims,
            self.errors,
            self.read_mismatches
        )
    }
}

/// The outcome of a workload run.
#[derive(Debug, Clone, Default)]
pub struct WorkloadResult {
    pub ops: OpCounts,
    /// Slowest single operation (a fault shows up here as the time the
    /// client was kept waiting).
    pub max_latency: Duration,
    /// The final read-back of every region, block by block.
    pub audit: Audit,
    /// The first few errors and mismatches, for the failure message.
    pub problems: Vec<String>,
}

impl WorkloadResult {
    /// No failed operation, no wrong read, every block as recorded.
    pub fn is_clean(&self) -> bool {
        self.ops.errors == 0 && self.ops.read_mismatches == 0 && self.audit.is_clean()
    }
}

impl std::fmt::Display for WorkloadResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; slowest op {:.2} s; verifier: {}",
            self.ops,
            self.max_latency.as_secs_f64(),
            self.audit
        )
    }
}

struct Worker {
    io: Box<dyn BlockIo>,
    v: Verifier,
    base: u64,
    len: u64,
    rng: u64,
    ops: OpCounts,
    max_latency: Duration,
    problems: Vec<String>,
    trim_supported: bool,
}

fn next(rng: &mut u64) -> u64 {
    // SplitMix64, as the verifier's pattern.
    *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Worker {
    fn note(&mut self, what: String) {
        if self.problems.len() < 5 {
            self.problems.push(what);
        }
    }

    /// A random block-aligned range inside the region: (region offset, len).
    fn range(&mut self, w: &Workload) -> (u64, usize) {
        let bs = w.block_size as u64;
        let units = (self.len / bs).max(1);
        let max = (w.max_io as u64 / bs).clamp(1, units);
        let n = 1 + next(&mut self.rng) % max;
        let at = next(&mut self.rng) % (units - n + 1);
        (at * bs, (n * bs) as usize)
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut dyn BlockIo) -> io::Result<T>) -> io::Result<T> {
        let t = Instant::now();
        let r = f(self.io.as_mut());
        self.max_latency = self.max_latency.max(t.elapsed());
        r
    }

    fn one_op(&mut self, w: &Workload) {
        let dice = next(&mut self.rng) % 100;
        let (off, len) = self.range(w);
        let at = self.base + off;
        match dice {
            0..=44 => {
                let data = self.v.write(off, len);
                match self.timed(|io| io.write(at, &data)) {
                    Ok(()) => {
                        self.ops.writes += 1;
                        self.ops.bytes_written += len as u64;
                    }
                    Err(e) => {
                        // Not acknowledged: it may or may not have landed.
                        let _ = self.v.write_uncertain(off, len);
                        self.ops.errors += 1;
                        self.note(format!("write {len} bytes at {at}: {e}"));
                    }
                }
            }
            45..=84 => {
                let mut buf = vec![0u8; len];
                match self.timed(|io| io.read(at, &mut buf)) {
                    Ok(()) => {
                        self.ops.reads += 1;
                        self.ops.bytes_read += len as u64;
                        if let Err(m) = self.v.check(off, &buf) {
                            self.ops.read_mismatches += 1;
                            self.note(format!("read {len} bytes at {at}: {m}"));
                        }
                    }
                    Err(e) => {
                        self.ops.errors += 1;
                        self.note(format!("read {len} bytes at {at}: {e}"));
                    }
                }
            }
            85..=92 => match self.timed(|io| io.flush()) {
                Ok(()) => self.ops.flushes += 1,
                Err(e) => {
                    self.ops.errors += 1;
                    self.note(format!("flush: {e}"));
                }
            },
            _ if self.trim_supported => match self.timed(|io| io.trim(at, len as u64)) {
                Ok(true) => {
                    self.ops.trims += 1;
                    self.v.discarded(off, len);
                }
                Ok(false) => self.trim_supported = false,
                Err(e) => {
                    // Content is unspecified either way.
                    self.v.discarded(off, len);
                    self.ops.errors += 1;
                    self.note(format!("trim {len} bytes at {at}: {e}"));
                }
            },
            _ => {}
        }
    }

    /// Read the whole region back and audit it block by block.
    fn audit(&mut self, io: &mut dyn BlockIo, w: &Workload) -> Audit {
        let mut total = Audit::default();
        let step = (1u64 << 20).min(self.len).max(w.block_size as u64);
        let mut off = 0;
        while off < self.len {
            let n = step.min(self.len - off) as usize;
            let mut buf = vec![0u8; n];
            match io.read(self.base + off, &mut buf) {
                Ok(()) => total.merge(&self.v.audit(off, &buf).shifted(self.base)),
                Err(e) => {
                    self.ops.errors += 1;
                    self.note(format!("final read at {}: {e}", self.base + off));
                    // Count the unreadable blocks as torn: nothing vouches for them.
                    let blocks = (n / self.v.pattern().block_size()) as u64;
                    total.blocks += blocks;
                    total.torn += blocks;
                    total.first_bad.get_or_insert(self.base + off);
                }
            }
            off += n as u64;
        }
        total
    }
}

impl Audit {
    /// The same audit with `first_bad` moved by `base` bytes.
    fn shifted(mut self, base: u64) -> Audit {
        self.first_bad = self.first_bad.map(|o| o + base);
        self
    }
}

/// Run `w` through I/O handles from `open`: the workers run on their own
/// threads until `w.duration` is over (or `stop` is set), then each region
/// is read back through a fresh handle and audited. Blocking: call it from
/// `spawn_blocking` or a plain thread.
pub fn run(open: &Opener, w: &Workload, stop: &AtomicBool) -> io::Result<WorkloadResult> {
    let bs = w.block_size as u64;
    let region = (w.size / w.workers.max(1) as u64) / bs * bs;
    if region == 0 {
        return Err(io::Error::other("workload size too small for its workers"));
    }
    let deadline = Instant::now() + w.duration;
    let mut workers = Vec::new();
    for i in 0..w.workers {
        workers.push(Worker {
            io: open()?,
            // Regions start unwritten: their content before the run is
            // whatever an earlier run left.
            v: Verifier::new(
                w.seed ^ ((i as u64) << 32),
                w.block_size,
                region,
                Unwritten::Any,
            ),
            base: i as u64 * region,
            len: region,
            rng: w.seed.wrapping_mul(31).wrapping_add(i as u64),
            ops: OpCounts::default(),
            max_latency: Duration::ZERO,
            problems: Vec::new(),
            trim_supported: true,
        });
    }
    let mut out = WorkloadResult::default();
    let workers: Vec<Worker> = thread::scope(|scope| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|mut worker| {
                scope.spawn(move || {
                    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                        worker.one_op(w);
                        if worker.max_latency > w.op_timeout {
                            let msg = format!(
                                "an operation took {:?} (bound {:?})",
                                worker.max_latency, w.op_timeout
                            );
                            worker.note(msg);
                            break;
                        }
                    }
                    worker
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    if workers.len() != w.workers {
        return Err(io::Error::other("a worker thread panicked"));
    }
    let mut io = open()?;
    for mut worker in workers {
        let a = worker.audit(io.as_mut(), w);
        out.audit.merge(&a);
        out.ops.merge(&worker.ops);
        out.max_latency = out.max_latency.max(worker.max_latency);
        out.problems.extend(worker.problems);
    }
    Ok(out)
}
