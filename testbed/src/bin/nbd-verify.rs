//! `nbd-verify`: check an NBD export with an NBD client that is not ours
//! (the `nbd` crate's), as the compose demo's `check` service does.
//!
//! ```text
//! nbd-verify HOST:PORT [--export NAME] [--mib N] [--seed S] [--wait SECS]
//!            [--duration SECS] [--workers N]
//! ```
//! Default: write N MiB (16) of verifiable pattern blocks from offset 0,
//! flush, read everything back and compare. With `--duration`, run the
//! scenario workload (writes, reads, flushes, trims over `--workers`
//! connections, each in its own region) for that long and audit every block.
//! `--wait` retries the first connection that long (a server still starting).
//! Exit codes: 0 verified, 1 mismatch or I/O error, 2 usage, 3 unreachable.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testbed::nbd_client::NbdIo;
use testbed::scenarios::workload::{self, BlockIo, Opener, Workload};
use testbed::{Unwritten, Verifier};

const USAGE: &str = "usage: nbd-verify HOST:PORT [--export NAME] [--mib N] [--seed S] [--wait SECS] [--duration SECS] [--workers N]";
const IO_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    addr: String,
    export: String,
    mib: u64,
    seed: u64,
    wait: u64,
    duration: Option<u64>,
    workers: usize,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        addr: String::new(),
        export: "lun0".into(),
        mib: 16,
        seed: 1,
        wait: 0,
        duration: None,
        workers: 2,
    };
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    }
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--export" => a.export = it.next().ok_or("--export needs a name")?,
            "--mib" => a.mib = num("--mib", it.next())?,
            "--seed" => a.seed = num("--seed", it.next())?,
            "--wait" => a.wait = num("--wait", it.next())?,
            "--duration" => a.duration = Some(num("--duration", it.next())?),
            "--workers" => a.workers = num("--workers", it.next())?,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if a.addr.is_empty() => a.addr = s.to_string(),
            s => return Err(format!("unexpected argument {s}")),
        }
    }
    if a.addr.is_empty() {
        return Err("the NBD server address HOST:PORT is missing".into());
    }
    if a.mib == 0 || a.workers == 0 {
        return Err("--mib and --workers must be at least 1".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("nbd-verify: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    let first =
        match NbdIo::connect_retry(&a.addr, &a.export, IO_TIMEOUT, Duration::from_secs(a.wait)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "nbd-verify: cannot open export {:?} at {}: {e}",
                    a.export, a.addr
                );
                return ExitCode::from(3);
            }
        };
    let info = first.info();
    println!(
        "nbd-verify: export {:?} at {}: {} bytes, read_only={}, flush={}, trim={} (connected after {:.1} s)",
        a.export,
        a.addr,
        info.size,
        info.read_only,
        info.send_flush,
        info.send_trim,
        t0.elapsed().as_secs_f64()
    );
    let r = match a.duration {
        Some(secs) => mixed(&a, info.size, secs),
        None => pattern(first, &a, info.size),
    };
    match r {
        Ok(msg) => {
            println!(
                "nbd-verify: OK: {msg} in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nbd-verify: FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

/// Write `--mib` MiB of pattern, flush, read back, compare.
fn pattern(mut io: NbdIo, a: &Args, size: u64) -> Result<String, String> {
    let len = (a.mib << 20).min(size);
    let mut v = Verifier::new(a.seed, 4096, len, Unwritten::Any);
    let step = 1u64 << 20;
    let mut off = 0;
    while off < len {
        let n = step.min(len - off) as usize;
        let data = v.write(off, n);
        io.write(off, &data)
            .map_err(|e| format!("write at {off}: {e}"))?;
        off += n as u64;
    }
    io.flush().map_err(|e| format!("flush: {e}"))?;
    let mut off = 0;
    let mut audit = testbed::Audit::default();
    while off < len {
        let n = step.min(len - off) as usize;
        let mut buf = vec![0u8; n];
        io.read(off, &mut buf)
            .map_err(|e| format!("read at {off}: {e}"))?;
        audit.merge(&v.audit(off, &buf));
        off += n as u64;
    }
    if !audit.is_clean() {
        return Err(format!("read back: {audit}"));
    }
    Ok(format!(
        "wrote, flushed and read back {} MiB: {audit}",
        len >> 20
    ))
}

/// The scenario workload for `secs` seconds over `--workers` connections.
fn mixed(a: &Args, size: u64, secs: u64) -> Result<String, String> {
    let (addr, export) = (a.addr.clone(), a.export.clone());
    let open: Opener = Arc::new(move || {
        NbdIo::connect(&addr, &export, IO_TIMEOUT).map(|c| Box::new(c) as Box<dyn BlockIo>)
    });
    let w = Workload {
        workers: a.workers,
        duration: Duration::from_secs(secs),
        size: (a.mib << 20).min(size),
        seed: a.seed,
        op_timeout: IO_TIMEOUT,
        ..Workload::default()
    };
    let r = workload::run(&open, &w, &AtomicBool::new(false)).map_err(|e| e.to_string())?;
    let summary = r.to_string();
    if !r.is_clean() {
        return Err(format!("{summary}; first problems: {:?}", r.problems));
    }
    Ok(summary)
}
