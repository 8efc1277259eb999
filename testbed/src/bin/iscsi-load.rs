//! `iscsi-load`: the load generators of `scripts/bench.sh`, on our
//! initiator library (issue 14).
//!
//! ```text
//! iscsi-load perf PORTAL TARGET LUN [--bs BYTES] [--qd N] [--secs S]
//!                 [--random] [--write] [--digests]
//! iscsi-load sessions PORTAL TARGET [--sessions N] [--connections C]
//!                 [--parallel P] [--hold S] [--active S] [--lun L]
//! ```
//!
//! `perf` is our side of libiscsi's `iscsi-perf`: one session, one
//! connection, QD requests of BS bytes kept in flight for S seconds
//! (sequential, wrapping at the end of the LUN, or uniformly random),
//! reads or writes, optionally with CRC32C header and data digests. It
//! prints one line: `ios N secs S iops X mib_s Y digests H/D` (the
//! negotiated digests, so a run that asked for them shows it got them).
//!
//! `sessions` logs in N sessions of C connections each (MC/S, as many as
//! the target allows; P logins at once, each session with its own ISID),
//! prints `logged_in N errors E secs S logins_per_s R connections K`
//! (K: connections up), then `holding` and
//! keeps them idle for S seconds (the caller measures the target's memory
//! meanwhile). With `--active S`, each session then reads 4 KiB at a random
//! block once a second for S seconds and the tool prints `active` at the
//! start and `reads N errors E p50_us A p99_us B p999_us C max_us D` at the
//! end; then every session logs out. Exit code 1 when any login or read
//! failed.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use initiator::bytes::Bytes;
use initiator::{DataDirection, Portal, ScsiDevice, Session, SessionConfig};

const USAGE: &str = "usage: iscsi-load perf PORTAL TARGET LUN [--bs BYTES] [--qd N] [--secs S] [--random] [--write] [--digests]\n       iscsi-load sessions PORTAL TARGET [--sessions N] [--connections C] [--parallel P] [--hold S] [--active S] [--lun L]";
const INITIATOR: &str = "iqn.2026-01.rs.iscsi-rs:load";

#[derive(Debug)]
struct Args {
    verb: String,
    portal: String,
    target: String,
    lun: u16,
    bs: u32,
    qd: usize,
    secs: f64,
    random: bool,
    write: bool,
    digests: bool,
    sessions: usize,
    connections: u16,
    parallel: usize,
    hold: f64,
    active: f64,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut pos = Vec::new();
    let mut a = Args {
        verb: String::new(),
        portal: String::new(),
        target: String::new(),
        lun: 0,
        bs: 4096,
        qd: 32,
        secs: 5.0,
        random: false,
        write: false,
        digests: false,
        sessions: 1000,
        connections: 1,
        parallel: 64,
        hold: 3.0,
        active: 0.0,
    };
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))
    }
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bs" => a.bs = num("--bs", it.next())?,
            "--qd" => a.qd = num("--qd", it.next())?,
            "--secs" => a.secs = num("--secs", it.next())?,
            "--random" => a.random = true,
            "--write" => a.write = true,
            "--digests" => a.digests = true,
            "--sessions" => a.sessions = num("--sessions", it.next())?,
            "--connections" => a.connections = num("--connections", it.next())?,
            "--parallel" => a.parallel = num("--parallel", it.next())?,
            "--hold" => a.hold = num("--hold", it.next())?,
            "--active" => a.active = num("--active", it.next())?,
            "--lun" => a.lun = num("--lun", it.next())?,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown flag {s}")),
            _ => pos.push(arg),
        }
    }
    let mut pos = pos.into_iter();
    a.verb = pos.next().ok_or("missing verb")?;
    a.portal = pos.next().ok_or("missing PORTAL")?;
    a.target = pos.next().ok_or("missing TARGET")?;
    match a.verb.as_str() {
        "perf" => {
            a.lun = pos
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or("missing LUN")?
        }
        "sessions" => {}
        v => return Err(format!("unknown verb {v}")),
    }
    if a.qd == 0 || a.parallel == 0 || a.bs == 0 || a.connections == 0 {
        return Err("--qd, --parallel, --bs and --connections must be at least 1".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    match parse() {
        Ok(a) => run(a),
        Err(e) => {
            let sep = if e.is_empty() { "" } else { "\n" };
            eprintln!("{e}{sep}{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(a: Args) -> ExitCode {
    // `perf` runs on one thread, as iscsi-perf does; `sessions` on two.
    let rt = if a.verb == "perf" {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iscsi-load: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        if a.verb == "perf" {
            perf(&a).await
        } else {
            sessions(&a).await
        }
    });
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("iscsi-load: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn config(a: &Args, isid_seq: u32) -> Res<SessionConfig> {
    let mut cfg = SessionConfig::new(Portal::parse(&a.portal)?, a.target.clone(), INITIATOR);
    cfg.offer.header_digest = a.digests;
    cfg.offer.data_digest = a.digests;
    cfg.connections = a.connections;
    // ISID type 0x80 ("random") with the sequence number as its qualifier:
    // distinct for every session of one run (RFC 7143 §11.12.5).
    let q = isid_seq.to_be_bytes();
    cfg.isid = Some([0x80, 0, q[0], q[1], q[2], q[3]]);
    Ok(cfg)
}

/// xorshift64*: random block numbers without a dependency.
fn next_rand(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

async fn perf(a: &Args) -> Res<bool> {
    let s = Session::connect(config(a, std::process::id())?).await?;
    let dev = ScsiDevice::open(&s, a.lun).await?;
    let bs = u64::from(dev.block_size());
    let io = u64::from(a.bs);
    if io % bs != 0 {
        return Err(format!("--bs {io} is not a multiple of the block size {bs}").into());
    }
    let ios_per_lun = dev.blocks() * bs / io;
    if ios_per_lun == 0 {
        return Err("the LUN is smaller than one I/O".into());
    }
    let data = Bytes::from(vec![0x5au8; io as usize]);
    let deadline = Instant::now() + Duration::from_secs_f64(a.secs);
    let start = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    // A sliding window of QD requests, as iscsi-perf and fio keep theirs.
    let offsets = (0u64..).map_while(|k| {
        (Instant::now() < deadline).then(|| {
            let slot = if a.random {
                next_rand(&mut seed) % ios_per_lun
            } else {
                k % ios_per_lun
            };
            slot * io / bs
        })
    });
    let mut results = futures::stream::iter(offsets)
        .map(|lba| {
            let (d, data) = (&dev, data.clone());
            async move {
                if a.write {
                    d.write(lba, data, false).await
                } else {
                    d.read(lba, (io / bs) as u32).await.map(|_| ())
                }
            }
        })
        .buffer_unordered(a.qd);
    let mut ios = 0u64;
    while let Some(r) = results.next().await {
        r?;
        ios += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let neg = s.negotiated();
    println!(
        "ios {ios} secs {secs:.3} iops {:.0} mib_s {:.1} digests {}/{}",
        ios as f64 / secs,
        (ios * io) as f64 / secs / f64::from(1 << 20),
        onoff(neg.header_digest),
        onoff(neg.data_digest)
    );
    drop(results);
    s.logout().await?;
    Ok(true)
}

fn onoff(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

async fn sessions(a: &Args) -> Res<bool> {
    let start = Instant::now();
    let logins = futures::stream::iter(0..a.sessions)
        .map(|i| async move {
            let cfg = config(a, i as u32)?;
            let s = Session::connect(cfg).await?;
            Ok::<_, Box<dyn std::error::Error>>(s)
        })
        .buffer_unordered(a.parallel);
    let results: Vec<_> = logins.collect().await;
    let secs = start.elapsed().as_secs_f64();
    let mut held = Vec::with_capacity(results.len());
    let mut errors = 0usize;
    for r in results {
        match r {
            Ok(s) => held.push(s),
            Err(e) => {
                if errors == 0 {
                    eprintln!("iscsi-load: first login error: {e}");
                }
                errors += 1;
            }
        }
    }
    println!(
        "logged_in {} errors {errors} secs {secs:.3} logins_per_s {:.0} connections {}",
        held.len(),
        held.len() as f64 / secs,
        held.iter().map(Session::connection_count).sum::<usize>()
    );
    println!("holding");
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let mut ok = errors == 0;
    if a.active > 0.0 {
        ok &= active(a, &held).await?;
    }
    futures::stream::iter(held)
        .for_each_concurrent(a.parallel, |s| async move {
            let _ = s.logout().await;
        })
        .await;
    Ok(ok)
}

/// Every session reads 4 KiB at a random block once a second for
/// `a.active` seconds (a READ(10) straight on the session: the LUN's
/// capacity is read once, on the first session); prints the latency
/// percentiles.
async fn active(a: &Args, held: &[Session]) -> Res<bool> {
    let Some(first) = held.first() else {
        return Ok(false);
    };
    let dev = ScsiDevice::open(first, a.lun).await?;
    let blocks = (4096 / dev.block_size()).max(1) as u16;
    let slots = (dev.blocks().min(u64::from(u32::MAX)) / u64::from(blocks)).max(1);
    let bytes = u32::from(blocks) * dev.block_size();
    let lun = dev.lun();
    println!("active");
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(a.active);
    let n = held.len() as u64;
    let tasks: Vec<_> = held
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (s, errors) = (s.clone(), errors.clone());
            tokio::spawn(async move {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
                let mut lat = Vec::new();
                // Spread the sessions over the second.
                let phase = Duration::from_micros(1_000_000 * i as u64 / n);
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + phase,
                    Duration::from_secs(1),
                );
                // A read slower than a second delays the next one, no burst.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < end {
                    tick.tick().await;
                    let lba = (next_rand(&mut seed) % slots) as u32 * u32::from(blocks);
                    let cdb = proto::scsi::cdb::read10(lba, blocks, false);
                    let t = Instant::now();
                    match s
                        .execute(lun, cdb.as_bytes(), DataDirection::Read(bytes))
                        .await
                    {
                        Ok(_) => lat.push(t.elapsed().as_micros() as u64),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "reads {} errors {errors} p50_us {} p99_us {} p999_us {} max_us {}",
        lat.len(),
        pct(0.5).unwrap_or(&0),
        pct(0.99).unwrap_or(&0),
        pct(0.999).unwrap_or(&0),
        lat.last().unwrap_or(&0)
    );
    Ok(errors == 0)
}
