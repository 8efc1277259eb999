//! NBD requests on a SCSI LUN: what each export advertises, request
//! validation (§ Request types, § Error values of the NBD spec), execution
//! through [`ScsiDevice`] (READ/WRITE (16) with FUA, SYNCHRONIZE CACHE,
//! UNMAP, WRITE SAME, GET LBA STATUS; SBC-4 §5), and the mapping of
//! initiator errors and SCSI sense to the NBD error values.
//!
//! CAN_MULTI_CONN is advertised for every export: all connections to an
//! export share one iSCSI session to one logical unit and this server keeps
//! no cache, so a FLUSH (SYNCHRONIZE CACHE, which covers the whole logical
//! unit's volatile cache, SBC-4 §5.24) or a FUA write answered on one
//! connection is visible and durable for all of them.

use bytes::Bytes;
use proto::scsi::inquiry::lba_status;
use proto::scsi::sense::{Asc, SenseKey};
use proto::scsi::Status;

use super::wire::*;
use crate::device::ScsiDevice;
use crate::error::Error;

/// Largest payload of one request (NBD_INFO_BLOCK_SIZE maximum).
pub(crate) const MAX_PAYLOAD: u32 = 32 << 20;

/// GET LBA STATUS descriptors asked per BLOCK_STATUS request.
const LBA_STATUS_DESCRIPTORS: u32 = 64;

/// What a client sees of an export: size, block sizes, transmission flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub size: u64,
    pub min_block: u32,
    pub preferred_block: u32,
    pub max_payload: u32,
    pub read_only: bool,
    pub trim: bool,
    /// Thin LUN: BLOCK_STATUS asks GET LBA STATUS.
    pub thin: bool,
}

impl Geometry {
    /// `None` when the LUN's block size cannot be an NBD minimum block
    /// size (a power of two up to 64 KiB).
    pub(crate) fn of(dev: &ScsiDevice, read_only: bool) -> Option<Geometry> {
        let bs = dev.block_size();
        if !bs.is_power_of_two() || bs > 65536 {
            return None;
        }
        let granularity = dev
            .block_limits()
            .map(|l| l.optimal_transfer_length_granularity as u32)
            .unwrap_or(0);
        let preferred = match granularity.checked_mul(bs) {
            Some(p) if p > 0 => p.next_power_of_two().clamp(bs, MAX_PAYLOAD),
            _ => bs.max(4096),
        };
        let read_only = read_only || dev.write_protected();
        Some(Geometry {
            size: dev.capacity().bytes(),
            min_block: bs,
            preferred_block: preferred,
            max_payload: MAX_PAYLOAD,
            read_only,
            trim: !read_only && dev.supports_unmap(),
            thin: dev.capacity().lbpme,
        })
    }

    /// Transmission flags for a connection (SEND_DF needs structured replies).
    pub(crate) fn flags(&self, structured: bool) -> u16 {
        let mut f = FLAG_HAS_FLAGS | FLAG_CAN_MULTI_CONN;
        if self.read_only {
            f |= FLAG_READ_ONLY;
        } else {
            // WRITE_ZEROES always works: WRITE SAME where the LUN has it,
            // else zero-filled WRITEs (ScsiDevice::write_zeroes).
            f |= FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_WRITE_ZEROES;
            if self.trim {
                f |= FLAG_SEND_TRIM;
            }
        }
        if structured {
            f |= FLAG_SEND_DF;
        }
        f
    }
}

/// A validated request.
#[derive(Debug)]
pub(crate) enum Op {
    Read {
        offset: u64,
        blocks: u32,
    },
    Write {
        offset: u64,
        data: Bytes,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        blocks: u32,
        fua: bool,
    },
    WriteZeroes {
        offset: u64,
        blocks: u64,
        may_unmap: bool,
        fua: bool,
    },
    BlockStatus {
        offset: u64,
        length: u32,
        req_one: bool,
    },
}

/// A request refused before execution.
pub(crate) type Refusal = (Errno, &'static str);

/// Per-connection negotiation that validation depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnMode {
    pub structured: bool,
    /// The id of the `base:allocation` context, when selected.
    pub meta_context: Option<u32>,
}

/// Check a request against the export and the negotiation. For WRITE the
/// caller has already read `data` (the stream must stay in sync even when
/// the request is refused).
pub(crate) fn validate(
    r: &Request,
    g: &Geometry,
    mode: &ConnMode,
    data: Option<Bytes>,
) -> Result<Op, Refusal> {
    check_flags(r, g, mode)?;
    let fua = r.flags & CMD_FLAG_FUA != 0;
    let writes = matches!(r.kind, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && g.read_only {
        // "it SHOULD return EPERM if it receives a write or trim request on
        // a read-only export."
        return Err((Errno::Perm, "the export is read-only"));
    }
    if r.kind == CMD_FLUSH {
        if g.read_only {
            return Err((Errno::Inval, "FLUSH was not advertised (read-only export)"));
        }
        // "For a flush request, length and offset are reserved, and MUST be
        // set to all-zero."
        if r.offset != 0 || r.length != 0 {
            return Err((Errno::Inval, "FLUSH with non-zero offset or length"));
        }
        return Ok(Op::Flush);
    }
    if r.kind == CMD_TRIM && !g.trim {
        return Err((
            Errno::Inval,
            "TRIM was not advertised (the LUN has no UNMAP)",
        ));
    }
    if r.kind == CMD_BLOCK_STATUS && mode.meta_context.is_none() {
        return Err((
            Errno::Inval,
            "BLOCK_STATUS without a selected metadata context",
        ));
    }
    let blocks = check_range(r, g, writes)?;
    Ok(match r.kind {
        CMD_READ if r.length > g.max_payload => {
            return Err((Errno::Inval, "READ larger than the maximum payload"))
        }
        CMD_READ => Op::Read {
            offset: r.offset,
            blocks,
        },
        CMD_WRITE => Op::Write {
            offset: r.offset,
            data: data.unwrap_or_default(),
            fua,
        },
        CMD_TRIM => Op::Trim {
            offset: r.offset,
            blocks,
            fua,
        },
        CMD_WRITE_ZEROES => Op::WriteZeroes {
            offset: r.offset,
            blocks: u64::from(blocks),
            may_unmap: r.flags & CMD_FLAG_NO_HOLE == 0,
            fua,
        },
        _ => Op::BlockStatus {
            offset: r.offset,
            length: r.length,
            req_one: r.flags & CMD_FLAG_REQ_ONE != 0,
        },
    })
}

/// The command is known and carries only flags valid for it and advertised
/// (FUA only with SEND_FUA, DF only with structured replies).
fn check_flags(r: &Request, g: &Geometry, mode: &ConnMode) -> Result<(), Refusal> {
    let flags = g.flags(mode.structured);
    let fua_ok = if flags & FLAG_SEND_FUA != 0 {
        CMD_FLAG_FUA
    } else {
        0
    };
    let allowed = match r.kind {
        CMD_READ => fua_ok | if mode.structured { CMD_FLAG_DF } else { 0 },
        CMD_WRITE | CMD_FLUSH | CMD_TRIM => fua_ok,
        CMD_WRITE_ZEROES => fua_ok | CMD_FLAG_NO_HOLE,
        CMD_BLOCK_STATUS => fua_ok | CMD_FLAG_REQ_ONE,
        _ => return Err((Errno::Inval, "unknown command")),
    };
    // NBD spec § Error values: "The server SHOULD return EINVAL if it
    // receives an unknown command flag".
    if r.flags & !allowed != 0 {
        return Err((Errno::Inval, "command flag not valid for this command"));
    }
    Ok(())
}

/// A non-empty, block-aligned range inside the export; its length in
/// blocks.
fn check_range(r: &Request, g: &Geometry, writes: bool) -> Result<u32, Refusal> {
    if r.length == 0 {
        return Err((Errno::Inval, "zero-length request"));
    }
    let end = r.offset.checked_add(u64::from(r.length));
    if !matches!(end, Some(e) if e <= g.size) {
        // "The server SHOULD return ENOSPC if it receives a write request
        // including one or more sectors beyond the size of the device."
        return Err(if writes {
            (Errno::NoSpc, "request beyond the end of the export")
        } else {
            (Errno::Inval, "request beyond the end of the export")
        });
    }
    // Unaligned requests are refused, never rounded.
    let bs = u64::from(g.min_block);
    if !r.offset.is_multiple_of(bs) || !u64::from(r.length).is_multiple_of(bs) {
        return Err((
            Errno::Inval,
            "offset or length not a multiple of the minimum block size",
        ));
    }
    Ok(r.length / g.min_block)
}

/// What a successful request answers.
pub(crate) enum Outcome {
    Done,
    Data(Bytes),
    Extents(Vec<(u32, u32)>),
}

/// Execute a validated request.
pub(crate) async fn execute(dev: &ScsiDevice, g: &Geometry, op: Op) -> Result<Outcome, Error> {
    let bs = u64::from(g.min_block);
    match op {
        Op::Read { offset, blocks } => Ok(Outcome::Data(dev.read(offset / bs, blocks).await?)),
        Op::Write { offset, data, fua } => {
            dev.write(offset / bs, data, fua && dev.supports_fua())
                .await?;
            flush_if(dev, fua && !dev.supports_fua()).await
        }
        Op::Flush => dev.flush().await.map(|_| Outcome::Done),
        Op::Trim {
            offset,
            blocks,
            fua,
        } => {
            dev.unmap(&[(offset / bs, blocks)]).await?;
            flush_if(dev, fua).await
        }
        Op::WriteZeroes {
            offset,
            blocks,
            may_unmap,
            fua,
        } => {
            dev.write_zeroes(offset / bs, blocks, may_unmap).await?;
            flush_if(dev, fua).await
        }
        Op::BlockStatus {
            offset,
            length,
            req_one,
        } => block_status(dev, g, offset, length, req_one)
            .await
            .map(Outcome::Extents),
    }
}

/// WRITE SAME and UNMAP have no FUA bit, and a LUN without DPOFUA may
/// ignore it: FUA is then a SYNCHRONIZE CACHE after the command.
async fn flush_if(dev: &ScsiDevice, flush: bool) -> Result<Outcome, Error> {
    if flush {
        dev.flush().await?;
    }
    Ok(Outcome::Done)
}

/// `base:allocation` extents for `[offset, offset + length)`: from GET LBA
/// STATUS on a thin LUN, else one extent of status 0 ("allocated or
/// unknown", always a correct answer).
async fn block_status(
    dev: &ScsiDevice,
    g: &Geometry,
    offset: u64,
    length: u32,
    req_one: bool,
) -> Result<Vec<(u32, u32)>, Error> {
    if !g.thin {
        return Ok(vec![(length, 0)]);
    }
    let bs = u64::from(g.min_block);
    let descs = dev.lba_status(offset / bs, LBA_STATUS_DESCRIPTORS).await?;
    let zero = dev.unmapped_reads_zero();
    let ext = extents(
        &descs,
        offset / bs,
        u64::from(length) / bs,
        bs,
        zero,
        req_one,
    );
    if ext.is_empty() {
        // The spec requires at least one descriptor; 0 is always safe.
        return Ok(vec![(length, 0)]);
    }
    Ok(ext)
}

/// Clip LBA status descriptors to `[lba, lba + blocks)`, convert them to
/// byte extents and merge neighbours with equal flags. Stops at the first
/// gap (the spec allows a shorter answer than asked).
pub(crate) fn extents(
    descs: &[(u64, u32, u8)],
    lba: u64,
    blocks: u64,
    bs: u64,
    reads_zero: bool,
    req_one: bool,
) -> Vec<(u32, u32)> {
    let end = lba + blocks;
    let mut at = lba;
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &(start, n, status) in descs {
        let d_end = start.saturating_add(u64::from(n));
        if start > at || d_end <= at {
            if start > at {
                break;
            }
            continue;
        }
        let stop = d_end.min(end);
        let flags = match status {
            lba_status::DEALLOCATED => STATE_HOLE | if reads_zero { STATE_ZERO } else { 0 },
            lba_status::ANCHORED if reads_zero => STATE_ZERO,
            _ => 0,
        };
        // At most `blocks` (a u32 byte length / bs) in total, so it fits.
        let len = ((stop - at) * bs) as u32;
        match out.last_mut() {
            Some(last) if last.1 == flags => last.0 += len,
            _ => out.push((len, flags)),
        }
        at = stop;
        if at >= end {
            break;
        }
    }
    if req_one {
        out.truncate(1);
    }
    out
}

/// The one place where initiator errors become NBD error values (only
/// those the spec defines; see `Errno`).
pub(crate) fn errno(e: &Error) -> Errno {
    match e {
        Error::Scsi(s) if s.status == Status::RESERVATION_CONFLICT.0 => Errno::Perm,
        Error::Scsi(s) => match &s.sense {
            Some(sense) => sense_errno(sense.key, sense.asc),
            None => Errno::Io,
        },
        Error::Usage(_) | Error::Unsupported(_) => Errno::Inval,
        Error::Closed => Errno::Shutdown,
        _ => Errno::Io,
    }
}

fn sense_errno(key: SenseKey, asc: Asc) -> Errno {
    // SBC-4 §4.7.3.6: SPACE ALLOCATION FAILED WRITE PROTECT (27h/07h).
    const SPACE_ALLOCATION_FAILED: Asc = Asc::new(0x27, 0x07);
    match key {
        SenseKey::DATA_PROTECT if asc == SPACE_ALLOCATION_FAILED => Errno::NoSpc,
        SenseKey::DATA_PROTECT => Errno::Perm,
        SenseKey::VOLUME_OVERFLOW => Errno::NoSpc,
        SenseKey::ILLEGAL_REQUEST => Errno::Inval,
        _ => Errno::Io,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ScsiError;
    use proto::scsi::sense::Sense;

    fn geometry() -> Geometry {
        Geometry {
            size: 1 << 20,
            min_block: 512,
            preferred_block: 4096,
            max_payload: MAX_PAYLOAD,
            read_only: false,
            trim: true,
            thin: true,
        }
    }

    fn req(kind: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            kind,
            handle: 1,
            offset,
            length,
        }
    }

    const SIMPLE: ConnMode = ConnMode {
        structured: false,
        meta_context: None,
    };

    #[test]
    fn validation() {
        let g = geometry();
        let v = |r: Request| validate(&r, &g, &SIMPLE, None).map(|_| ()).map_err(|e| e.0);
        assert_eq!(v(req(CMD_READ, 0, 0, 4096)), Ok(()));
        assert_eq!(v(req(CMD_READ, 0, 1, 512)), Err(Errno::Inval), "unaligned");
        assert_eq!(v(req(CMD_READ, 0, 0, 100)), Err(Errno::Inval), "unaligned");
        assert_eq!(v(req(CMD_READ, 0, 1 << 20, 512)), Err(Errno::Inval));
        assert_eq!(v(req(CMD_WRITE, 0, 1 << 20, 512)), Err(Errno::NoSpc));
        assert_eq!(v(req(CMD_WRITE, 0, u64::MAX, 512)), Err(Errno::NoSpc));
        assert_eq!(v(req(CMD_READ, CMD_FLAG_DF, 0, 512)), Err(Errno::Inval));
        assert_eq!(
            v(req(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 512)),
            Err(Errno::Inval)
        );
        assert_eq!(v(req(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 0, 512)), Ok(()));
        assert_eq!(v(req(CMD_FLUSH, 0, 0, 0)), Ok(()));
        assert_eq!(v(req(CMD_FLUSH, 0, 512, 0)), Err(Errno::Inval));
        assert_eq!(v(req(CMD_BLOCK_STATUS, 0, 0, 512)), Err(Errno::Inval));
        assert_eq!(v(req(99, 0, 0, 512)), Err(Errno::Inval));
        assert_eq!(v(req(CMD_READ, 0, 0, 0)), Err(Errno::Inval));
        let big = Geometry { size: 1 << 40, ..g };
        let r = req(CMD_READ, 0, 0, MAX_PAYLOAD + 512);
        assert_eq!(
            validate(&r, &big, &SIMPLE, None).unwrap_err().0,
            Errno::Inval
        );
        let ro = Geometry {
            read_only: true,
            trim: false,
            ..g
        };
        let r = req(CMD_WRITE, 0, 0, 512);
        assert_eq!(validate(&r, &ro, &SIMPLE, None).unwrap_err().0, Errno::Perm);
        let r = req(CMD_READ, CMD_FLAG_FUA, 0, 512);
        assert_eq!(
            validate(&r, &ro, &SIMPLE, None).unwrap_err().0,
            Errno::Inval
        );
        assert_eq!(ro.flags(false) & FLAG_READ_ONLY, FLAG_READ_ONLY);
        assert_eq!(ro.flags(false) & FLAG_SEND_FLUSH, 0);
        let structured = ConnMode {
            structured: true,
            meta_context: Some(1),
        };
        let r = req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 512);
        assert!(validate(&r, &g, &structured, None).is_ok());
        let r = req(CMD_READ, CMD_FLAG_DF, 0, 512);
        assert!(validate(&r, &g, &structured, None).is_ok());
    }

    #[test]
    fn extents_clip_merge_and_stop_at_gaps() {
        use lba_status::*;
        let d = [(0, 8, MAPPED), (8, 8, MAPPED), (16, 100, DEALLOCATED)];
        assert_eq!(
            extents(&d, 4, 20, 512, true, false),
            vec![(12 * 512, 0), (8 * 512, STATE_HOLE | STATE_ZERO)]
        );
        assert_eq!(extents(&d, 4, 20, 512, false, true), vec![(12 * 512, 0)]);
        assert_eq!(
            extents(&d, 20, 4, 512, false, false),
            vec![(4 * 512, STATE_HOLE)]
        );
        // A gap: the descriptor does not start where we are.
        assert!(extents(&[(10, 8, MAPPED)], 4, 20, 512, true, false).is_empty());
        assert!(extents(&[], 0, 1, 512, true, false).is_empty());
    }

    #[test]
    fn sense_to_errno() {
        let scsi = |key, asc| {
            Error::Scsi(ScsiError {
                status: Status::CHECK_CONDITION.0,
                sense: Some(Sense::new(key, asc)),
                raw_sense: Bytes::new(),
            })
        };
        let e = scsi(SenseKey::MEDIUM_ERROR, Asc::UNRECOVERED_READ_ERROR);
        assert_eq!(errno(&e), Errno::Io);
        let e = scsi(SenseKey::DATA_PROTECT, Asc::WRITE_PROTECTED);
        assert_eq!(errno(&e), Errno::Perm);
        let e = scsi(SenseKey::DATA_PROTECT, Asc::new(0x27, 0x07));
        assert_eq!(errno(&e), Errno::NoSpc);
        let e = scsi(SenseKey::ILLEGAL_REQUEST, Asc::LBA_OUT_OF_RANGE);
        assert_eq!(errno(&e), Errno::Inval);
        assert_eq!(errno(&Error::SessionFailed("x".into())), Errno::Io);
        assert_eq!(errno(&Error::Closed), Errno::Shutdown);
    }
}
