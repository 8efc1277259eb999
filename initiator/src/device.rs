//! A block-device view of one logical unit (SBC-4/SPC-5 over a
//! [`Session`]): LUN scan (REPORT LUNS, INQUIRY, READ CAPACITY 16 with a
//! fallback to READ CAPACITY 10), and read / write (FUA) / flush
//! (SYNCHRONIZE CACHE) / unmap / write zeroes (WRITE SAME) / raw CDBs. This
//! is the API the CLI, the NBD server and the tests use.
//!
//! Large transfers are split at the LUN's MAXIMUM TRANSFER LENGTH (Block
//! Limits VPD, SBC-4 §6.6.4) and the pieces are issued concurrently.
//!
//! Control-channel tags (docs/control-channel.md): a device's reads and
//! writes carry the tags of its [`IoTags`] (the session's
//! [`SessionConfig::io_tags`](crate::SessionConfig) when opened,
//! [`ScsiDevice::with_tags`] for another view of the same LUN);
//! [`ScsiDevice::read_tagged`] / [`ScsiDevice::write_tagged`] tag one
//! command.

use bytes::Bytes;
use futures::future::try_join_all;
use proto::scsi::cdb::{self, CdbSize, Command};
use proto::scsi::inquiry::{
    parse_vpd, BlockLimits, LogicalBlockProvisioning, ReadCapacity16, StandardInquiry,
};
use proto::scsi::lun::{parse_report_luns, Lun};
use proto::scsi::Status;

use crate::control::{self, IoTags};
use crate::error::{Error, ProtocolError, Result};
use crate::session::{DataDirection, RawResult, Session};

/// Default cap on one command's transfer when the LUN does not say (8 MiB).
const DEFAULT_MAX_TRANSFER_BYTES: u64 = 8 << 20;

/// Largest logical block length we accept from READ CAPACITY. SBC-4 allows
/// any value; real devices use 512..=4096 (+ protection bytes). The bound
/// keeps per-command buffers (block size x blocks) from being sized by an
/// absurd target-provided value.
const MAX_BLOCK_SIZE: u32 = 1 << 20;

/// Capacity of a LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// Number of logical blocks (last LBA + 1).
    pub blocks: u64,
    /// Logical block length in bytes.
    pub block_size: u32,
    /// Logical block provisioning management enabled (thin).
    pub lbpme: bool,
    /// Deallocated blocks read as zeroes (LBPRZ).
    pub lbprz: bool,
}

impl Capacity {
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size as u64)
    }
}

/// What a LUN scan reports for each LUN.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LunInfo {
    /// The 8-byte LUN field.
    pub lun: u64,
    /// The LUN number when single-level.
    pub number: Option<u16>,
    pub device_type: u8,
    pub vendor: String,
    pub product: String,
    pub revision: String,
    /// For direct-access block devices.
    pub capacity: Option<Capacity>,
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// REPORT LUNS (retrying with a larger allocation when truncated).
pub async fn report_luns(s: &Session) -> Result<Vec<Lun>> {
    let mut alloc = 4096u32;
    loop {
        let r = s
            .execute(
                0,
                cdb::report_luns(alloc).as_bytes(),
                DataDirection::Read(alloc),
            )
            .await?;
        let (luns, total) =
            parse_report_luns(&r.data).ok_or(ProtocolError::ShortData("REPORT LUNS"))?;
        if (total as u64 + 8) <= alloc as u64 || alloc >= 1 << 20 {
            return Ok(luns);
        }
        // The target's LUN LIST LENGTH is untrusted: bounded to 1 MiB.
        alloc = total.saturating_add(8).min(1 << 20);
    }
}

/// Standard INQUIRY.
pub async fn inquiry(s: &Session, lun: u64) -> Result<StandardInquiry> {
    let r = s
        .execute(
            lun,
            cdb::inquiry(false, 0, 255).as_bytes(),
            DataDirection::Read(255),
        )
        .await?;
    Ok(StandardInquiry::parse(&r.data).ok_or(ProtocolError::ShortData("INQUIRY"))?)
}

/// One VPD page, raw (header included).
pub async fn vpd(s: &Session, lun: u64, page: u8) -> Result<Bytes> {
    let alloc = 4096u16;
    let r = s
        .execute(
            lun,
            cdb::inquiry(true, page, alloc).as_bytes(),
            DataDirection::Read(alloc as u32),
        )
        .await?;
    // SPC-5 §7.8.1: byte 1 is the page code; anything else is not the page asked for.
    match r.data.get(1) {
        Some(&p) if p == page && r.data.len() >= 4 => Ok(r.data),
        _ => Err(ProtocolError::WrongVpdPage(page).into()),
    }
}

/// READ CAPACITY (16), falling back to READ CAPACITY (10) when the target
/// does not support it (SBC-4 §5.20, §5.21).
pub async fn read_capacity(s: &Session, lun: u64) -> Result<Capacity> {
    match s
        .execute(
            lun,
            cdb::read_capacity16(32).as_bytes(),
            DataDirection::Read(32),
        )
        .await
    {
        Ok(r) => {
            if let Some(c) = ReadCapacity16::parse(&r.data) {
                return Ok(Capacity {
                    blocks: c.last_lba.saturating_add(1),
                    block_size: c.block_len,
                    lbpme: c.lbpme,
                    lbprz: c.lbprz,
                });
            }
        }
        Err(Error::Scsi(e)) if e.status == Status::CHECK_CONDITION.0 => {}
        Err(e) => return Err(e),
    }
    let r = s
        .execute(
            lun,
            Command::ReadCapacity10.encode().as_bytes(),
            DataDirection::Read(8),
        )
        .await?;
    let d = &r.data;
    if d.len() < 8 {
        return Err(ProtocolError::ShortData("READ CAPACITY (10)").into());
    }
    let last = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let bs = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    Ok(Capacity {
        blocks: last as u64 + 1,
        block_size: bs,
        lbpme: false,
        lbprz: false,
    })
}

/// REPORT LUNS, then INQUIRY and (for disks) READ CAPACITY on each.
pub async fn scan_luns(s: &Session) -> Result<Vec<LunInfo>> {
    let mut out = Vec::new();
    for l in report_luns(s).await? {
        let raw = l.to_u64();
        let inq = inquiry(s, raw).await?;
        let capacity = if inq.device_type == 0 && inq.peripheral_qualifier == 0 {
            read_capacity(s, raw).await.ok()
        } else {
            None
        };
        out.push(LunInfo {
            lun: raw,
            number: l.number(),
            device_type: inq.device_type,
            vendor: ascii(&inq.vendor),
            product: ascii(&inq.product),
            revision: ascii(&inq.revision),
            capacity,
        });
    }
    Ok(out)
}

/// A direct-access LUN as a block device.
#[derive(Clone)]
pub struct ScsiDevice {
    session: Session,
    lun: u64,
    capacity: Capacity,
    limits: Option<BlockLimits>,
    lbp: Option<LogicalBlockProvisioning>,
    max_transfer_blocks: u32,
    mode: DeviceFlags,
    /// Tags of this view's READs and WRITEs.
    tags: IoTags,
}

/// The device-specific parameter of the MODE SENSE header (SBC-4 §6.5.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DeviceFlags {
    /// WP: the medium is write-protected.
    write_protected: bool,
    /// DPOFUA: the device server honours the DPO and FUA bits.
    dpofua: bool,
}

/// MODE SENSE (6), all pages, without block descriptors; only the header's
/// device-specific parameter is used. A target that refuses the command
/// gets the defaults (writable, no DPOFUA).
async fn device_flags(s: &Session, lun: u64) -> DeviceFlags {
    let c = Command::ModeSense {
        size: CdbSize::Six,
        dbd: true,
        llbaa: false,
        pc: 0,
        page: 0x3F,
        subpage: 0,
        alloc_len: 255,
    }
    .encode();
    match s.execute(lun, c.as_bytes(), DataDirection::Read(255)).await {
        // SBC-4 §6.5.1: "WP ... DPOFUA" in the DEVICE-SPECIFIC PARAMETER.
        Ok(r) if r.data.len() >= 4 => DeviceFlags {
            write_protected: r.data[2] & 0x80 != 0,
            dpofua: r.data[2] & 0x10 != 0,
        },
        _ => DeviceFlags::default(),
    }
}

impl std::fmt::Debug for ScsiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScsiDevice")
            .field("lun", &self.lun)
            .field("capacity", &self.capacity)
            .field("tags", &self.tags)
            .finish()
    }
}

impl ScsiDevice {
    /// Open LUN `number` (peripheral/flat addressing).
    pub async fn open(session: &Session, number: u16) -> Result<ScsiDevice> {
        Self::open_raw(session, Lun::from_number(number).to_u64()).await
    }

    /// Open a LUN by its raw 8-byte field: READ CAPACITY, then the Block
    /// Limits and Logical Block Provisioning VPD pages when listed.
    pub async fn open_raw(session: &Session, lun: u64) -> Result<ScsiDevice> {
        let capacity = read_capacity(session, lun).await?;
        if capacity.block_size == 0 || capacity.block_size > MAX_BLOCK_SIZE {
            return Err(ProtocolError::BlockSize(capacity.block_size).into());
        }
        let mut limits = None;
        let mut lbp = None;
        if let Ok(p0) = vpd(session, lun, 0x00).await {
            let pages: Vec<u8> = parse_vpd(&p0).map(|(_, b)| b.to_vec()).unwrap_or_default();
            if pages.contains(&0xB0) {
                if let Ok(b) = vpd(session, lun, 0xB0).await {
                    limits = parse_vpd(&b).map(|(_, body)| BlockLimits::parse(body));
                }
            }
            if pages.contains(&0xB2) {
                if let Ok(b) = vpd(session, lun, 0xB2).await {
                    lbp = parse_vpd(&b).and_then(|(_, body)| LogicalBlockProvisioning::parse(body));
                }
            }
        }
        let default_blocks =
            (DEFAULT_MAX_TRANSFER_BYTES / capacity.block_size as u64).max(1) as u32;
        let max_transfer_blocks = match limits.as_ref().map(|l| l.max_transfer_length) {
            Some(m) if m > 0 => m.min(default_blocks),
            _ => default_blocks,
        };
        let mode = device_flags(session, lun).await;
        Ok(ScsiDevice {
            session: session.clone(),
            lun,
            capacity,
            limits,
            lbp,
            max_transfer_blocks,
            mode,
            tags: session.config().io_tags,
        })
    }

    /// The same LUN, on the same session, with reads and writes tagged
    /// `tags` (this device is unchanged). A view rather than a tag argument
    /// on every method: whoever holds the device (the NBD export `lun0@tag6`,
    /// ublk, a test) tags all its block I/O without a second code path, and
    /// [`read`](Self::read) / [`write`](Self::write) keep their signatures.
    /// Only READ and WRITE carry tags (the control channel defines no bits
    /// in other commands): flush, unmap and WRITE SAME stay untagged.
    pub fn with_tags(&self, tags: IoTags) -> ScsiDevice {
        ScsiDevice {
            tags,
            ..self.clone()
        }
    }

    /// The tags this view's reads and writes carry.
    pub fn tags(&self) -> IoTags {
        self.tags
    }

    pub fn session(&self) -> &Session {
        &self.session
    }
    pub fn lun(&self) -> u64 {
        self.lun
    }
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }
    pub fn block_size(&self) -> u32 {
        self.capacity.block_size
    }
    pub fn blocks(&self) -> u64 {
        self.capacity.blocks
    }
    pub fn block_limits(&self) -> Option<&BlockLimits> {
        self.limits.as_ref()
    }

    pub fn provisioning(&self) -> Option<&LogicalBlockProvisioning> {
        self.lbp.as_ref()
    }

    /// The medium is write-protected (MODE SENSE WP bit, SBC-4 §6.5.1).
    pub fn write_protected(&self) -> bool {
        self.mode.write_protected
    }

    /// The device server honours the FUA bit (MODE SENSE DPOFUA bit).
    pub fn supports_fua(&self) -> bool {
        self.mode.dpofua
    }

    /// Deallocated blocks read as zeroes (READ CAPACITY 16 LBPRZ or the
    /// LBP VPD page's LBPRZ field, SBC-4 §5.20.2 / §6.6.6).
    pub fn unmapped_reads_zero(&self) -> bool {
        self.capacity.lbprz || self.lbp.as_ref().map(|l| l.lbprz & 1 != 0).unwrap_or(false)
    }

    /// GET LBA STATUS (SBC-4 §5.8) from `lba`: up to `max_descriptors`
    /// `(starting LBA, blocks, provisioning status)` descriptors, status
    /// values from [`proto::scsi::inquiry::lba_status`].
    pub async fn lba_status(&self, lba: u64, max_descriptors: u32) -> Result<Vec<(u64, u32, u8)>> {
        self.check_range(lba, 1)?;
        let alloc = 8 + 16 * max_descriptors.clamp(1, 4096);
        let c = Command::GetLbaStatus {
            lba,
            alloc_len: alloc,
        }
        .encode();
        let r = self
            .session
            .execute(self.lun, c.as_bytes(), DataDirection::Read(alloc))
            .await?;
        proto::scsi::inquiry::parse_lba_status(&r.data)
            .ok_or_else(|| ProtocolError::ShortData("GET LBA STATUS").into())
    }

    /// UNMAP is supported (LBP VPD LBPU, SBC-4 §6.6.6).
    pub fn supports_unmap(&self) -> bool {
        self.lbp.as_ref().map(|l| l.lbpu).unwrap_or(false)
    }

    /// WRITE SAME (16) may be used to write zeroes (Block Limits lists a
    /// MAXIMUM WRITE SAME LENGTH, or LBP allows WRITE SAME with UNMAP).
    pub fn supports_write_same(&self) -> bool {
        self.limits
            .as_ref()
            .map(|l| l.max_write_same_length > 0)
            .unwrap_or(false)
            || self.lbp.as_ref().map(|l| l.lbpws).unwrap_or(false)
    }

    fn check_range(&self, lba: u64, blocks: u64) -> Result<()> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.capacity.blocks => Ok(()),
            _ => Err(Error::Usage(format!(
                "LBA range {lba}+{blocks} beyond the {} blocks of the LUN",
                self.capacity.blocks
            ))),
        }
    }

    /// Split `blocks` from `lba` into per-command pieces.
    fn pieces(&self, lba: u64, blocks: u64) -> Vec<(u64, u32)> {
        let step = self.max_transfer_blocks.max(1) as u64;
        let mut v = Vec::new();
        let mut at = lba;
        let end = lba + blocks;
        while at < end {
            let n = (end - at).min(step);
            v.push((at, n as u32));
            at += n;
        }
        v
    }

    /// READ (16) `blocks` blocks from `lba`, tagged with this view's read
    /// tag.
    pub async fn read(&self, lba: u64, blocks: u32) -> Result<Bytes> {
        self.read_tagged(lba, blocks, self.tags.reads).await
    }

    /// READ (16) with `tag` (1..=7; `None`: untagged) in its reserved bits,
    /// whatever this view's tags are.
    pub async fn read_tagged(&self, lba: u64, blocks: u32, tag: Option<u8>) -> Result<Bytes> {
        let tag = control::check_tag(tag)?;
        self.check_range(lba, blocks as u64)?;
        let bs = self.capacity.block_size;
        let parts = self.pieces(lba, blocks as u64);
        let futs = parts.iter().map(|&(l, n)| async move {
            let len = n * bs;
            let mut c = cdb::read16(l, n, false);
            control::tag(&mut c, tag)?;
            let r = self
                .session
                .execute(self.lun, c.as_bytes(), DataDirection::Read(len))
                .await?;
            if r.data.len() != len as usize {
                let got = r.data.len();
                return Err(Error::from(ProtocolError::ShortRead { got, want: len }));
            }
            Ok(r.data)
        });
        let chunks = try_join_all(futs).await?;
        if chunks.len() == 1 {
            return Ok(chunks.into_iter().next().unwrap_or_default());
        }
        let mut out = bytes::BytesMut::with_capacity(blocks as usize * bs as usize);
        for c in chunks {
            out.extend_from_slice(&c);
        }
        Ok(out.freeze())
    }

    /// WRITE (16) `data` (a whole number of blocks) at `lba`; with `fua`
    /// the target writes through to the medium before answering. Tagged
    /// with this view's write tag.
    pub async fn write(&self, lba: u64, data: Bytes, fua: bool) -> Result<()> {
        self.write_tagged(lba, data, fua, self.tags.writes).await
    }

    /// WRITE (16) with `tag` (1..=7; `None`: untagged) in its reserved
    /// bits, whatever this view's tags are.
    pub async fn write_tagged(
        &self,
        lba: u64,
        data: Bytes,
        fua: bool,
        tag: Option<u8>,
    ) -> Result<()> {
        let tag = control::check_tag(tag)?;
        let bs = self.capacity.block_size as usize;
        if !data.len().is_multiple_of(bs) {
            return Err(Error::Usage(format!(
                "write of {} bytes is not a multiple of the {bs}-byte block",
                data.len()
            )));
        }
        let blocks = (data.len() / bs) as u64;
        self.check_range(lba, blocks)?;
        let parts = self.pieces(lba, blocks);
        let futs = parts.iter().map(|&(l, n)| {
            let off = ((l - lba) as usize) * bs;
            let chunk = data.slice(off..off + n as usize * bs);
            async move {
                let mut c = cdb::write16(l, n, fua);
                control::tag(&mut c, tag)?;
                self.session
                    .execute(self.lun, c.as_bytes(), DataDirection::Write(chunk))
                    .await
            }
        });
        try_join_all(futs).await?;
        Ok(())
    }

    /// SYNCHRONIZE CACHE (16) over the whole LUN.
    pub async fn flush(&self) -> Result<()> {
        match self
            .session
            .execute(
                self.lun,
                cdb::synchronize_cache16(0, 0).as_bytes(),
                DataDirection::None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Scsi(e)) if e.status == Status::CHECK_CONDITION.0 => {
                // Some targets only know SYNCHRONIZE CACHE (10).
                let c = Command::SynchronizeCache {
                    size: CdbSize::Ten,
                    lba: 0,
                    blocks: 0,
                    immed: false,
                }
                .encode();
                self.session
                    .execute(self.lun, c.as_bytes(), DataDirection::None)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// UNMAP these `(lba, blocks)` ranges (SBC-4 §5.32).
    pub async fn unmap(&self, ranges: &[(u64, u32)]) -> Result<()> {
        if !self.supports_unmap() {
            return Err(Error::Unsupported("the LUN does not support UNMAP".into()));
        }
        for &(l, n) in ranges {
            self.check_range(l, n as u64)?;
        }
        let max_desc = self
            .limits
            .as_ref()
            .map(|l| l.max_unmap_block_descriptor_count)
            .filter(|&c| c > 0)
            .unwrap_or(1)
            .min(cdb::MAX_UNMAP_DESCRIPTORS as u32) as usize;
        let max_lbas = self
            .limits
            .as_ref()
            .map(|l| l.max_unmap_lba_count)
            .filter(|&c| c > 0)
            .unwrap_or(u32::MAX);
        let mut split = Vec::new();
        for &(mut l, mut n) in ranges {
            while n > 0 {
                let k = n.min(max_lbas);
                split.push((l, k));
                l += k as u64;
                n -= k;
            }
        }
        for group in split.chunks(max_desc) {
            let params = cdb::encode_unmap_params(group);
            let c = cdb::unmap(params.len() as u16);
            self.session
                .execute(
                    self.lun,
                    c.as_bytes(),
                    DataDirection::Write(Bytes::from(params)),
                )
                .await?;
        }
        Ok(())
    }

    /// Zero `blocks` blocks at `lba`: WRITE SAME (16) with a zero block when
    /// supported (with UNMAP when `may_unmap` and LBPWS allow deallocation),
    /// else plain zero-filled writes.
    pub async fn write_zeroes(&self, lba: u64, blocks: u64, may_unmap: bool) -> Result<()> {
        self.check_range(lba, blocks)?;
        let bs = self.capacity.block_size as usize;
        if self.supports_write_same() {
            let unmap = may_unmap && self.lbp.as_ref().map(|l| l.lbpws).unwrap_or(false);
            let max = self
                .limits
                .as_ref()
                .map(|l| l.max_write_same_length)
                .filter(|&m| m > 0)
                .unwrap_or(u32::MAX as u64)
                .min(u32::MAX as u64);
            let zero = Bytes::from(vec![0u8; bs]);
            let mut at = lba;
            let end = lba + blocks;
            while at < end {
                let n = (end - at).min(max) as u32;
                let c = cdb::write_same16(at, n, unmap, false);
                self.session
                    .execute(self.lun, c.as_bytes(), DataDirection::Write(zero.clone()))
                    .await?;
                at += n as u64;
            }
            return Ok(());
        }
        let chunk_blocks = (self.max_transfer_blocks as u64)
            .min((1 << 20) / bs as u64)
            .max(1);
        let zero = Bytes::from(vec![0u8; chunk_blocks as usize * bs]);
        let mut at = lba;
        let end = lba + blocks;
        while at < end {
            let n = (end - at).min(chunk_blocks);
            self.write(at, zero.slice(..n as usize * bs), false).await?;
            at += n;
        }
        Ok(())
    }

    /// Any CDB, returning whatever status the target gave.
    pub async fn raw(&self, cdb: &[u8], dir: DataDirection) -> Result<RawResult> {
        self.session.execute_raw(self.lun, cdb, dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_bytes() {
        let c = Capacity {
            blocks: 2048,
            block_size: 512,
            lbpme: false,
            lbprz: false,
        };
        assert_eq!(c.bytes(), 1 << 20);
    }

    #[test]
    fn ascii_trims() {
        assert_eq!(ascii(b"IET     "), "IET");
    }
}
