//! Logical units: configuration, stable identities (serial number, NAA
//! WWN), mutable SCSI state (mode parameters, unit attentions, reservations,
//! medium state) and the range lock that makes COMPARE AND WRITE atomic.

use super::pr::Reservations;
use super::Nexus;
use crate::backend::Backend;
use crate::sync::lock;
use proto::scsi::Asc;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// I/O mode of a logical unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoMode {
    /// Write-back: completed writes may sit in the page cache until
    /// SYNCHRONIZE CACHE or FUA (WCE = 1).
    #[default]
    WriteBack,
    /// Write-through: every write is durable before its status (WCE = 0).
    WriteThrough,
    /// Read-only: writes fail with DATA PROTECT / WRITE PROTECTED.
    ReadOnly,
}

/// Configuration of one logical unit.
#[derive(Clone, Debug)]
pub struct LuConfig {
    pub lun: u16,
    pub backend: Arc<dyn Backend>,
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Physical block size reported by READ CAPACITY (16) (LOGICAL BLOCKS
    /// PER PHYSICAL BLOCK EXPONENT) and used as the unmap granularity.
    /// Values up to `block_size` mean "same as the logical block". The
    /// default keeps one logical block per physical block: libiscsi's
    /// GetLBAStatus.UnmapSingle expects descriptors at physical-block
    /// offsets that contradict SBC-4 when LBPPB > 1.
    pub physical_block_size: u32,
    pub mode: IoMode,
    /// Thin provisioning: UNMAP, WRITE SAME with UNMAP, GET LBA STATUS.
    /// Only effective when the backend supports unmap.
    pub thin: bool,
    /// Report a removable medium (RMB): enables eject/load through START
    /// STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL semantics. Off for disks.
    pub removable: bool,
    /// Accept SANITIZE (SBC-4 §5.30). Off by default because one command
    /// from any initiator irrevocably erases the whole logical unit; when
    /// off, REPORT SUPPORTED OPERATION CODES does not list it and the CDB
    /// gets INVALID COMMAND OPERATION CODE, as on a device without it.
    pub sanitize: bool,
    /// The control channel starts on (tags decoded, vendor command C7h
    /// answered; see [`super::control`]). Off by default.
    pub control: bool,
    /// Seed of the unit serial number (e.g. target name + backing path).
    /// The same seed always gives the same serial.
    pub serial_seed: String,
    /// A serial number the user set: reported verbatim (VPD 80h and the T10
    /// vendor designator of VPD 83h) instead of one derived from the seed.
    pub serial: Option<String>,
    /// Seed of the NAA WWN; same seed, same WWN across restarts.
    pub wwn_seed: String,
    /// IEEE company id in the NAA designator (24 bits).
    pub company_id: u32,
    pub vendor: String,
    pub product: String,
    pub revision: String,
}

impl LuConfig {
    pub fn new(lun: u16, backend: Arc<dyn Backend>) -> Self {
        Self {
            lun,
            backend,
            block_size: 512,
            physical_block_size: 512,
            mode: IoMode::WriteBack,
            thin: false,
            removable: false,
            sanitize: false,
            control: false,
            serial_seed: format!("lun{lun}"),
            serial: None,
            wwn_seed: format!("lun{lun}"),
            company_id: DEFAULT_COMPANY_ID,
            vendor: "RUST-ISC".into(),
            product: "VIRTUAL-DISK".into(),
            revision: "0001".into(),
        }
    }
}

/// Company id used when none is configured (the OUI Linux software targets
/// commonly use; the 100 vendor-specific bits below it come from the seed).
pub const DEFAULT_COMPANY_ID: u32 = 0x001405;

/// FNV-1a, 64 bit: a fixed, documented hash so that identities never change
/// with the Rust version (std's hasher is not stable across releases).
pub fn fnv1a64(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Longest serial number a user may set: VPD 83h's T10 vendor designator
/// holds 8 bytes of vendor id and the serial in a 255-byte field.
pub const MAX_SERIAL_LEN: usize = 128;

/// A user-set serial number as SPC-5 §7.7.18 wants it (PRODUCT SERIAL
/// NUMBER: ASCII graphic characters and spaces), or why not.
pub fn check_serial(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_SERIAL_LEN {
        return Err(format!(
            "serial must be 1 to {MAX_SERIAL_LEN} characters, got {}",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "serial {s:?} has {c:?}: use printable ASCII (SPC-5 PRODUCT SERIAL NUMBER)"
        ));
    }
    Ok(())
}

/// Unit serial number (VPD 80h): 16 upper-case hex digits from the seed.
pub fn serial_from_seed(seed: &str) -> String {
    format!("{:016X}", fnv1a64(seed.as_bytes(), 0))
}

/// NAA IEEE Registered Extended designator (NAA 6, SPC-5 §7.7.6.6.5):
/// 4-bit NAA, 24-bit company id, 36-bit vendor specific id and a 64-bit
/// extension, both derived from the seed.
pub fn naa_from_seed(seed: &str, company_id: u32) -> [u8; 16] {
    let a = fnv1a64(seed.as_bytes(), 0x6A);
    let b = fnv1a64(seed.as_bytes(), 0x1E5);
    let mut id = [0u8; 16];
    let hi: u64 = (0x6u64 << 60) | (((company_id & 0xFF_FFFF) as u64) << 36) | (a & 0xF_FFFF_FFFF);
    id[..8].copy_from_slice(&hi.to_be_bytes());
    id[8..].copy_from_slice(&b.to_be_bytes());
    id
}

/// Changeable mode parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeState {
    pub wce: bool,
    pub d_sense: bool,
    pub swp: bool,
}

/// Mutable per-LU SCSI state, behind one short-held mutex (never held
/// across I/O).
#[derive(Debug)]
pub struct LuState {
    pub mode: IoMode,
    pub modes: ModeState,
    pub ua: HashMap<Nexus, VecDeque<Asc>>,
    pub seen: HashSet<Nexus>,
    pub res: Reservations,
    /// Nexuses that sent PREVENT ALLOW MEDIUM REMOVAL with PREVENT = 1.
    pub prevent: HashSet<Nexus>,
    pub medium_present: bool,
    /// A SANITIZE is running: other commands get NOT READY, SANITIZE IN
    /// PROGRESS (SBC-4 §4.11).
    pub sanitizing: bool,
    /// How far the running SANITIZE is, in 65536ths (the PROGRESS
    /// INDICATION of its NOT READY sense data, SPC-5 §4.4.2.4.4); written
    /// by the job on the blocking pool.
    pub sanitize_progress: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// Results of the last EXTENDED COPY per (nexus, list id).
    pub copy_results: HashMap<(Nexus, u8), CopyResult>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyResult {
    pub ok: bool,
    pub segments_processed: u16,
    pub transfer_count_bytes: u64,
}

impl LuState {
    /// Queues a unit attention for one nexus (no duplicates). Power on,
    /// reset and I_T nexus loss conditions (ASC 29h) have the highest
    /// precedence of all unit attentions (SAM-5 §5.14) and are reported
    /// first; the others keep their order.
    pub fn push_ua(&mut self, n: &Nexus, asc: Asc) {
        let q = self.ua.entry(n.clone()).or_default();
        if q.contains(&asc) {
            return;
        }
        if asc.asc() == 0x29 {
            let at = q.iter().take_while(|a| a.asc() == 0x29).count();
            q.insert(at, asc);
        } else {
            q.push_back(asc);
        }
    }

    /// Queues a unit attention for every nexus that has seen this LU,
    /// except `except`.
    pub fn push_ua_all(&mut self, asc: Asc, except: Option<&Nexus>) {
        let all: Vec<Nexus> = self
            .seen
            .iter()
            .filter(|n| Some(*n) != except)
            .cloned()
            .collect();
        for n in all {
            self.push_ua(&n, asc);
        }
    }
}

impl LuState {
    /// Mode parameters after power on or reset: the defaults (no saved
    /// pages), WCE following the I/O mode.
    pub fn default_modes(mode: IoMode) -> ModeState {
        ModeState {
            wce: mode == IoMode::WriteBack,
            d_sense: false,
            swp: false,
        }
    }

    /// The logical unit reset of SAM-5 §6.3.3, as far as it concerns this
    /// state (commands in flight are the transport's business):
    /// - "c) release all reservations established using the reserve/release
    ///   management method (persistent reservations shall not be affected)";
    /// - "d) return the logical unit's operating mode to the appropriate
    ///   initial conditions ... MODE SELECT parameters for which no saved
    ///   values have been established shall be returned to their default
    ///   values" (medium-removal prevention ends with it, SBC-4 §5.15);
    /// - "e) establish a unit attention condition": for the initiator port
    ///   of every I_T nexus, the one that requested the reset included
    ///   (29h/00h POWER ON, RESET, OR BUS DEVICE RESET OCCURRED, which
    ///   SAM-5 allows in place of 29h/03h and which initiators such as
    ///   libiscsi and Linux look for).
    ///
    /// A SANITIZE in progress is not affected (SBC-4 §4.11.2: it survives
    /// resets).
    pub fn reset(&mut self) {
        self.res.legacy = None;
        self.prevent.clear();
        self.modes = Self::default_modes(self.mode);
        self.push_ua_all(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET, None);
    }
}

/// One logical unit.
#[derive(Debug)]
pub struct LogicalUnit {
    pub cfg: LuConfig,
    pub serial: String,
    pub naa: [u8; 16],
    state: Mutex<LuState>,
    pub(crate) locks: RangeLocks,
    /// The control channel (issue #12).
    pub control: super::control::ControlState,
    /// The backend size last seen by the device server, to notice a
    /// capacity changed from outside (an RBD image resized by `rbd`).
    seen_size: std::sync::atomic::AtomicU64,
    /// Where APTPL state is saved (`None`: APTPL not supported, PTPL_C 0).
    pub(crate) pr_store: Option<super::pr::persist::PrStore>,
    /// Serializes PERSISTENT RESERVE OUT on this LU, so that the state is
    /// saved and committed in command order without holding the state lock
    /// across the file write.
    pub(crate) pr_lock: tokio::sync::Mutex<()>,
}

impl LuState {
    /// NOT READY, SANITIZE IN PROGRESS with the progress indication
    /// (SBC-4 §4.11: reported "for as long as" the sanitize runs).
    pub fn sanitize_in_progress(&self) -> proto::scsi::Sense {
        let p = self
            .sanitize_progress
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut s = proto::scsi::Sense::new(
            proto::scsi::SenseKey::NOT_READY,
            proto::scsi::Asc::SANITIZE_IN_PROGRESS,
        );
        s.sense_key_specific = Some(proto::scsi::sense::SenseKeySpecific::Progress(p));
        s
    }
}

impl LogicalUnit {
    pub fn new(cfg: LuConfig) -> Self {
        let serial = cfg
            .serial
            .clone()
            .unwrap_or_else(|| serial_from_seed(&cfg.serial_seed));
        let naa = naa_from_seed(&cfg.wwn_seed, cfg.company_id);
        let state = LuState {
            mode: cfg.mode,
            modes: LuState::default_modes(cfg.mode),
            ua: HashMap::new(),
            seen: HashSet::new(),
            res: Reservations::default(),
            prevent: HashSet::new(),
            medium_present: true,
            sanitizing: false,
            sanitize_progress: Default::default(),
            copy_results: HashMap::new(),
        };
        let seen_size = std::sync::atomic::AtomicU64::new(cfg.backend.size());
        let control = super::control::ControlState::new(cfg.control);
        Self {
            cfg,
            serial,
            naa,
            state: Mutex::new(state),
            locks: RangeLocks::default(),
            control,
            seen_size,
            pr_store: None,
            pr_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Gives the LU a place for its APTPL state (in `dir`, named after the
    /// target and LUN) and restores what was saved there. Blocking. An
    /// unreadable or inconsistent file is an error, never a guess.
    pub fn with_pr_state(mut self, dir: &std::path::Path, target: &str) -> Result<Self, String> {
        use super::pr::persist::{Load, PrStore};
        let store = PrStore::new(dir, target, self.cfg.lun, &self.naa);
        match store.load()? {
            Load::None => {}
            Load::State(r) => {
                tracing::info!(
                    lun = self.cfg.lun,
                    registrations = r.registrations.len(),
                    reserved = r.reservation.is_some(),
                    file = %store.path.display(),
                    "persistent reservations restored (APTPL)"
                );
                self.state().res = r;
            }
            Load::Foreign(naa) => tracing::warn!(
                lun = self.cfg.lun,
                file = %store.path.display(),
                saved_for = naa,
                this_lu = store.naa,
                "saved persistent reservations belong to another logical unit (the LUN's \
                 backing store changed): not applied; they are replaced at the next \
                 PERSISTENT RESERVE OUT with APTPL"
            ),
        }
        self.pr_store = Some(store);
        Ok(self)
    }

    pub fn state(&self) -> MutexGuard<'_, LuState> {
        lock(&self.state)
    }

    pub fn block_size(&self) -> u32 {
        self.cfg.block_size
    }

    /// Capacity in logical blocks (from the backend's current size).
    pub fn num_blocks(&self) -> u64 {
        self.cfg.backend.size() / self.cfg.block_size as u64
    }

    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT.
    pub fn lbppbe(&self) -> u8 {
        let bs = self.cfg.block_size.max(1);
        let pbs = self.cfg.physical_block_size.max(bs);
        (pbs / bs).checked_ilog2().unwrap_or(0).min(15) as u8
    }

    /// Thin provisioning is in effect.
    pub fn thin(&self) -> bool {
        self.cfg.thin && self.cfg.backend.supports_unmap()
    }

    /// Whether the backend's size changed since the last call (one atomic
    /// load per command; the first caller after a change gets `true`).
    pub fn capacity_changed(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = self.cfg.backend.size();
        self.seen_size.load(Ordering::Acquire) != now
            && self.seen_size.swap(now, Ordering::AcqRel) != now
    }

    /// OPTIMAL UNMAP GRANULARITY in logical blocks: the physical block, or
    /// the backend's discard granularity when coarser.
    pub fn unmap_granularity_blocks(&self) -> u32 {
        let bs = u64::from(self.cfg.block_size.max(1));
        let g = self.cfg.backend.unmap_granularity().div_ceil(bs);
        g.max(1 << self.lbppbe()).min(u32::MAX as u64) as u32
    }
}

/// Exclusive locks on LBA ranges. Writers of overlapping ranges serialize;
/// disjoint ranges never wait. Used by every medium-modifying command so
/// that COMPARE AND WRITE (SBC-4 §5.3: compare and write as one atomic
/// operation) cannot interleave with another write.
#[derive(Debug, Default)]
pub(crate) struct RangeLocks {
    held: Mutex<Vec<(u64, u64, u64)>>,
    next: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

pub(crate) struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    id: u64,
}

impl RangeLocks {
    /// Locks `[start, end)`; waits while an overlapping range is held.
    pub(crate) async fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        let end = end.max(start + 1);
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut held = lock(&self.held);
                if !held.iter().any(|&(s, e, _)| s < end && start < e) {
                    held.push((start, end, id));
                    return RangeGuard { locks: self, id };
                }
            }
            notified.await;
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.locks.held);
        held.retain(|&(_, _, id)| id != self.id);
        drop(held);
        self.locks.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_stable() {
        // Fixed vectors: changing the derivation would change every
        // deployed LU's serial and WWN.
        assert_eq!(fnv1a64(b"", 0), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a", 0), 0xaf63_dc4c_8601_ec8c);
        let s1 = serial_from_seed("iqn.2024-01.x:t /var/disk.img");
        assert_eq!(s1, serial_from_seed("iqn.2024-01.x:t /var/disk.img"));
        assert_ne!(s1, serial_from_seed("iqn.2024-01.x:t /var/disk2.img"));
        assert_eq!(s1.len(), 16);
        let n = naa_from_seed("seed", DEFAULT_COMPANY_ID);
        assert_eq!(n[0] >> 4, 6);
        assert_eq!(
            ((n[0] as u32 & 0xF) << 20)
                | ((n[1] as u32) << 12)
                | ((n[2] as u32) << 4)
                | (n[3] as u32 >> 4),
            DEFAULT_COMPANY_ID
        );
        assert_eq!(n, naa_from_seed("seed", DEFAULT_COMPANY_ID));
        assert_ne!(n, naa_from_seed("seed2", DEFAULT_COMPANY_ID));
    }

    #[tokio::test]
    async fn range_locks_serialize_overlaps_only() {
        let l = Arc::new(RangeLocks::default());
        let g1 = l.lock(0, 10).await;
        // Disjoint: immediate.
        let g2 = tokio::time::timeout(std::time::Duration::from_millis(50), l.lock(10, 20)).await;
        assert!(g2.is_ok());
        drop(g2);
        // Overlapping: waits until g1 is dropped.
        let l2 = l.clone();
        let t = tokio::spawn(async move {
            let _g = l2.lock(5, 6).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        assert!(!t.is_finished());
        drop(g1);
        tokio::time::timeout(std::time::Duration::from_secs(2), t)
            .await
            .unwrap()
            .unwrap();
    }
}
