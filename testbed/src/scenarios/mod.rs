//! Fault scenarios (issue 11): named, reusable runs of a mixed workload
//! (reads, writes, flushes, discards) through our initiator while faults
//! are injected between it and our target, each ending with a block-by-block
//! audit of the disk by the [`crate::verify::Verifier`].
//!
//! | scenario | fault |
//! |---|---|
//! | [`cut_connections`] | every connection of the session is cut every 2 s |
//! | [`kill_target`] | the target process is SIGKILLed mid-copy and restarted |
//! | [`stall`] | the network stops forwarding (both ways) for longer than the NOP timeout, then heals |
//! | [`corrupt_with_digests`] | single bytes flipped on the wire, both directions, with CRC32C header and data digests on |
//! | [`slow_target`] | 20 ms one-way latency and a 4 MiB/s bandwidth cap each way |
//!
//! After each: no lost acknowledged write, no torn or stale block, no read
//! that returned wrong data, no operation that failed or hung (each is
//! bounded by [`Workload::op_timeout`]) and the whole run bounded in time.
//! [`ScenarioReport::check`] says which of these failed.

pub mod stack;
pub mod workload;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::proxy::Direction;
pub use stack::{EventLog, ScsiIo, Stack, StackOptions};
pub use workload::{BlockIo, OpCounts, Opener, Workload, WorkloadResult};

/// What a scenario did and found.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub name: &'static str,
    /// Wall time of the whole run (workload and final audit).
    pub elapsed: Duration,
    /// Faults injected.
    pub faults: u64,
    /// What the faults were.
    pub fault_kind: String,
    /// Session recoveries seen (Recovering → Recovered), in order.
    pub recoveries: Vec<Duration>,
    /// Times the session gave up recovering.
    pub session_failures: usize,
    /// Whether faults must have been noticed: a session recovery, or one
    /// of `handled_in_session`.
    pub expect_recovery: bool,
    /// Faults the stack handled without a session recovery, when the
    /// scenario can count them: PDUs the target rejected for a data digest
    /// error (RFC 7143 §7.8; the initiator sends the command again).
    pub handled_in_session: Option<u64>,
    pub bound: Duration,
    pub workload: Workload,
    pub result: WorkloadResult,
}

impl ScenarioReport {
    /// `Err` with every violated property.
    pub fn check(&self) -> Result<(), String> {
        let r = &self.result;
        let mut bad = Vec::new();
        if self.faults == 0 {
            bad.push("no fault was injected".to_string());
        }
        if self.expect_recovery
            && self.recoveries.is_empty()
            && self.handled_in_session.unwrap_or(0) == 0
        {
            bad.push("the faults were never noticed: no session recovery".to_string());
        }
        if !r.audit.is_clean() {
            bad.push(format!("final audit: {}", r.audit));
        }
        if r.ops.read_mismatches > 0 {
            bad.push(format!(
                "{} reads returned wrong data",
                r.ops.read_mismatches
            ));
        }
        if r.ops.errors > 0 {
            bad.push(format!("{} operations failed", r.ops.errors));
        }
        if r.max_latency >= self.workload.op_timeout {
            bad.push(format!("an operation hung for {:?}", r.max_latency));
        }
        if self.elapsed > self.bound {
            bad.push(format!(
                "the run took {:?} (bound {:?})",
                self.elapsed, self.bound
            ));
        }
        if self.session_failures > 0 {
            bad.push(format!(
                "the session gave up {} times",
                self.session_failures
            ));
        }
        if r.ops.writes == 0 || r.ops.reads == 0 {
            bad.push(format!("too little I/O: {:?}", r.ops));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: {}\n  problems: {:?}\n  {self}",
                self.name,
                bad.join("; "),
                r.problems
            ))
        }
    }
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rec: Vec<String> = self
            .recoveries
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect();
        write!(
            f,
            "scenario {}: {:.1} s; faults: {} x {}; recoveries: {} [{}] s; {}",
            self.name,
            self.elapsed.as_secs_f64(),
            self.faults,
            self.fault_kind,
            self.recoveries.len(),
            rec.join(", "),
            self.result,
        )?;
        if let Some(n) = self.handled_in_session {
            write!(f, "; handled in session: {n}")?;
        }
        Ok(())
    }
}

/// A workload running on a blocking thread.
struct Running {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<io::Result<WorkloadResult>>,
    started: Instant,
}

impl Running {
    fn start(open: Opener, w: &Workload) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, w) = (stop.clone(), w.clone());
        let handle = tokio::task::spawn_blocking(move || workload::run(&open, &w, &s));
        Running {
            stop,
            handle,
            started: Instant::now(),
        }
    }

    fn is_done(&self) -> bool {
        self.handle.is_finished()
    }

    /// Wait for the workers and the audit, at most `bound` from the start.
    async fn finish(self, bound: Duration) -> io::Result<(WorkloadResult, Duration)> {
        let left = bound.saturating_sub(self.started.elapsed());
        let stop = self.stop.clone();
        match tokio::time::timeout(left, self.handle).await {
            Ok(Ok(r)) => Ok((r?, self.started.elapsed())),
            Ok(Err(e)) => Err(io::Error::other(format!("workload task: {e}"))),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("workload hung: not finished within {bound:?}"),
                ))
            }
        }
    }
}

/// Sleep `d`, or less if the workload ended.
async fn pause(run: &Running, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !run.is_done() {
        tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
    }
}

/// The faults a scenario injected.
struct Faults {
    name: &'static str,
    count: u64,
    kind: String,
    /// Whether they must have been noticed (see [`ScenarioReport`]).
    expect_recovery: bool,
    /// Counts the faults handled without session recovery, at the end.
    handled_in_session: Option<fn(&Stack) -> u64>,
}

impl Faults {
    /// Wait for the workload (bounded by `bound`) and write the report.
    async fn conclude(
        self,
        run: Running,
        bound: Duration,
        stack: &Stack,
        w: &Workload,
    ) -> io::Result<ScenarioReport> {
        let (result, elapsed) = run.finish(bound).await?;
        Ok(ScenarioReport {
            name: self.name,
            elapsed,
            faults: self.count,
            fault_kind: self.kind,
            recoveries: stack.events.recoveries(),
            session_failures: stack.events.failures(),
            expect_recovery: self.expect_recovery,
            handled_in_session: self.handled_in_session.map(|count| count(stack)),
            bound,
            workload: w.clone(),
            result,
        })
    }
}

/// Time a workload of `d` plus the final audit may take, faults included.
fn bound_for(d: Duration) -> Duration {
    d + Duration::from_secs(45)
}

/// Cut every connection of the session every `every` while `w` runs.
pub async fn cut_connections(
    stack: &mut Stack,
    open: Opener,
    w: &Workload,
    every: Duration,
) -> io::Result<ScenarioReport> {
    let run = Running::start(open, w);
    let mut count = 0;
    let t0 = Instant::now();
    while t0.elapsed() + every < w.duration && !run.is_done() {
        pause(&run, every).await;
        stack.proxy.cut_all();
        count += 1;
    }
    let bound = bound_for(w.duration);
    let kind = format!("cut all connections every {:.1} s", every.as_secs_f64());
    let faults = Faults {
        name: "cut_connections",
        count,
        kind,
        expect_recovery: true,
        handled_in_session: None,
    };
    faults.conclude(run, bound, stack, w).await
}

/// SIGKILL the target `after` into the workload, restart it `down` later.
pub async fn kill_target(
    stack: &mut Stack,
    open: Opener,
    w: &Workload,
    after: Duration,
    down: Duration,
) -> io::Result<ScenarioReport> {
    let run = Running::start(open, w);
    pause(&run, after).await;
    stack.kill_target();
    tokio::time::sleep(down).await;
    stack.restart_target()?;
    let bound = bound_for(w.duration);
    let kind = format!(
        "target SIGKILLed, restarted after {:.1} s",
        down.as_secs_f64()
    );
    let faults = Faults {
        name: "kill_target",
        count: 1,
        kind,
        expect_recovery: true,
        handled_in_session: None,
    };
    faults.conclude(run, bound, stack, w).await
}

/// Stop forwarding both ways for `length` (longer than the NOP timeout),
/// twice, then let the network heal.
pub async fn stall(
    stack: &mut Stack,
    open: Opener,
    w: &Workload,
    length: Duration,
) -> io::Result<ScenarioReport> {
    let run = Running::start(open, w);
    let mut count = 0;
    for _ in 0..2 {
        pause(&run, Duration::from_secs(2)).await;
        if run.is_done() {
            break;
        }
        stack.proxy.set_blackhole(Direction::ToServer, true);
        stack.proxy.set_blackhole(Direction::ToClient, true);
        tokio::time::sleep(length).await;
        stack.proxy.set_blackhole(Direction::ToServer, false);
        stack.proxy.set_blackhole(Direction::ToClient, false);
        count += 1;
    }
    let bound = bound_for(w.duration + 2 * length);
    let kind = format!(
        "network stalled both ways for {:.1} s",
        length.as_secs_f64()
    );
    let faults = Faults {
        name: "stall",
        count,
        kind,
        expect_recovery: true,
        handled_in_session: None,
    };
    faults.conclude(run, bound, stack, w).await
}

/// Flip one byte on the wire every `every`, taking turns over `dirs`, with
/// header and data digests negotiated (build the stack with
/// `StackOptions::digests`): each must be detected, the connection
/// recovered, and nothing corrupted ever written or returned.
pub async fn corrupt_with_digests(
    stack: &mut Stack,
    open: Opener,
    w: &Workload,
    every: Duration,
    dirs: &[Direction],
) -> io::Result<ScenarioReport> {
    if dirs.is_empty() {
        return Err(io::Error::other("no direction to corrupt"));
    }
    let neg = stack.session.negotiated();
    if !(neg.header_digest && neg.data_digest) {
        return Err(io::Error::other(format!("digests not negotiated: {neg:?}")));
    }
    let run = Running::start(open, w);
    let mut count = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() + every < w.duration && !run.is_done() {
        pause(&run, every).await;
        let d = dirs[count as usize % dirs.len()];
        // Somewhere in the next 64 KiB: header, data or digest bytes alike.
        let at = (count * 7919 + 1000) % 65_536;
        stack.proxy.corrupt_at(d, at, 0x20);
        count += 1;
    }
    let bound = bound_for(w.duration);
    let kind = format!(
        "one byte flipped every {:.1} s, {dirs:?}",
        every.as_secs_f64()
    );
    let faults = Faults {
        name: "corrupt_with_digests",
        count,
        kind,
        expect_recovery: true,
        handled_in_session: Some(data_digest_rejects),
    };
    faults.conclude(run, bound, stack, w).await
}

/// PDUs the target process rejected for a data digest error, from its log
/// (`target/src/conn`: "rejecting PDU error=data digest mismatch ...").
fn data_digest_rejects(stack: &Stack) -> u64 {
    let lines = stack.target_output();
    lines
        .iter()
        .filter(|l| l.contains("rejecting PDU") && l.contains("data digest mismatch"))
        .count() as u64
}

/// A slow target: `delay` each way and a bandwidth cap of `rate` bytes/s
/// each way for the whole run.
pub async fn slow_target(
    stack: &mut Stack,
    open: Opener,
    w: &Workload,
    delay: Duration,
    rate: u64,
) -> io::Result<ScenarioReport> {
    for d in [Direction::ToServer, Direction::ToClient] {
        stack.proxy.set_delay(d, delay);
        stack.proxy.set_rate(d, rate);
    }
    let run = Running::start(open, w);
    let bound = bound_for(w.duration);
    let kind = format!(
        "{} ms latency and {} KiB/s cap each way",
        delay.as_millis(),
        rate >> 10
    );
    let faults = Faults {
        name: "slow_target",
        count: 1,
        kind,
        expect_recovery: false,
        handled_in_session: None,
    };
    let r = faults.conclude(run, bound, stack, w).await;
    stack.proxy.clear_faults();
    r
}
