//! The SCSI device server (SAM-5 §4.6) for direct-access block devices
//! (SBC-4, SPC-5): logical units in a runtime-mutable map, command
//! execution, unit attentions per I_T nexus, reservations.
//!
//! The iSCSI layer calls [`DeviceServer::execute`] with an I_T nexus and a
//! request; CDBs are decoded by `proto::scsi::Command::parse` (which owns the
//! reserved-bit rules) and executed here against a [`Backend`]. Blocking I/O
//! runs on tokio's blocking pool so commands proceed concurrently.
//!
//! Order of checks for each command (SAM-5 §5.14, SPC-5 §5.13, §4.5):
//! 1. logical unit exists (else LOGICAL UNIT NOT SUPPORTED; INQUIRY answers
//!    with peripheral qualifier 011b, REPORT LUNS and REQUEST SENSE work);
//! 2. pending unit attention (not for INQUIRY, REPORT LUNS, REQUEST SENSE);
//! 3. CDB validity (INVALID COMMAND OPERATION CODE / INVALID FIELD IN CDB);
//! 4. reservation conflicts;
//! 5. medium present (removable LUs), then the command itself.
//!
//! Not implemented, on purpose: protection information (PI fields are
//! rejected), ACA (NACA = 1 is rejected), REGISTER AND MOVE, ALL_TG_PT and
//! SPEC_I_PT, APTPL persistence, saved mode pages (SAVING PARAMETERS NOT
//! SUPPORTED), EXTENDED COPY other than LID1 block-to-block between LUs of
//! this target.
//!
//! Opt-in per LU ([`LuConfig`]): SANITIZE (`sanitize`, since one command
//! erases the whole LU) and a removable medium (`removable`).

mod exec;
pub mod lu;
pub mod pr;
pub mod xcopy;

pub use lu::{IoMode, LogicalUnit, LuConfig};

use crate::backend::Backend;
use bytes::Bytes;
use proto::scsi::{Asc, Lun, Sense, Status};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Identifies an I_T nexus (initiator port + target port) for unit
/// attentions and reservations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nexus {
    /// "iqn...,i,0x<isid>"
    pub initiator_port: String,
    /// "iqn...,t,0x<tpgt>"
    pub target_port: String,
    pub relative_target_port: u16,
}

/// One SCSI command as the iSCSI layer received it.
#[derive(Clone, Debug, Default)]
pub struct ScsiRequest {
    /// Raw 8-byte LUN field (big-endian).
    pub lun: u64,
    pub cdb: Bytes,
    /// All write data the initiator sent, up to the expected length.
    pub data_out: Bytes,
    pub expected_data_in_length: u32,
    pub task_attr: u8,
}

/// The outcome of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResult {
    pub status: u8,
    /// Sense data, without the 2-byte iSCSI length prefix.
    pub sense: Option<Bytes>,
    /// Never longer than the command's allocation/transfer length; the
    /// shell truncates to the expected data-in length and reports residuals.
    pub data_in: Bytes,
    /// Bytes the CDB itself asks to move (data-in or data-out), for
    /// residual computation; `None` when the CDB could not be decoded.
    pub transfer_length: Option<u32>,
}

impl ScsiResult {
    pub fn good(data_in: Bytes) -> Self {
        Self {
            status: Status::GOOD.0,
            sense: None,
            data_in,
            transfer_length: None,
        }
    }

    pub fn check(sense: &Sense, descriptor: bool) -> Self {
        Self {
            status: Status::CHECK_CONDITION.0,
            sense: Some(Bytes::from(sense.encode(descriptor))),
            data_in: Bytes::new(),
            transfer_length: None,
        }
    }

    pub fn status(s: Status) -> Self {
        Self {
            status: s.0,
            sense: None,
            data_in: Bytes::new(),
            transfer_length: None,
        }
    }

    /// Decoded sense data, if any (tests and logs).
    pub fn sense_data(&self) -> Option<Sense> {
        self.sense.as_ref().and_then(|s| Sense::parse(s).ok())
    }
}

/// Errors of the management API.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("LUN {0} already exists")]
    LunExists(u16),
    #[error("no LUN {0}")]
    NoSuchLun(u16),
    #[error("LUN number {0} out of range (0..=16383)")]
    BadLun(u16),
    #[error("unsupported block size {0} (512 or 4096)")]
    BadBlockSize(u32),
    #[error("backend: {0}")]
    Backend(#[from] crate::backend::BackendError),
}

/// Limits reported in the Block Limits VPD page and enforced.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest READ/WRITE in bytes.
    pub max_transfer_bytes: u32,
    pub max_unmap_lba_count: u32,
    pub max_unmap_descriptors: u32,
    /// MAXIMUM COMPARE AND WRITE LENGTH in blocks.
    pub max_compare_and_write: u8,
    /// MAXIMUM WRITE SAME LENGTH in blocks (also bounds "0 = to the end").
    pub max_write_same_blocks: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_transfer_bytes: 16 << 20,
            max_unmap_lba_count: 1 << 20,
            max_unmap_descriptors: 256,
            max_compare_and_write: 255,
            max_write_same_blocks: 0xFFFF,
        }
    }
}

/// The SCSI target device: a set of logical units.
#[derive(Debug)]
pub struct DeviceServer {
    luns: RwLock<BTreeMap<u16, Arc<LogicalUnit>>>,
    pub limits: Limits,
}

impl DeviceServer {
    pub fn new(luns: Vec<LuConfig>) -> Result<Arc<Self>, DeviceError> {
        let s = Self {
            luns: RwLock::new(BTreeMap::new()),
            limits: Limits::default(),
        };
        for cfg in luns {
            s.insert(cfg)?;
        }
        Ok(Arc::new(s))
    }

    fn insert(&self, cfg: LuConfig) -> Result<Arc<LogicalUnit>, DeviceError> {
        if cfg.lun > 16383 {
            return Err(DeviceError::BadLun(cfg.lun));
        }
        if cfg.block_size != 512 && cfg.block_size != 4096 {
            return Err(DeviceError::BadBlockSize(cfg.block_size));
        }
        let mut m = self.luns.write().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(&cfg.lun) {
            return Err(DeviceError::LunExists(cfg.lun));
        }
        let lu = Arc::new(LogicalUnit::new(cfg));
        m.insert(lu.cfg.lun, lu.clone());
        Ok(lu)
    }

    pub(crate) fn all(&self) -> Vec<Arc<LogicalUnit>> {
        self.luns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The LU addressed by a raw 8-byte LUN field.
    pub fn lu(&self, lun: u64) -> Option<Arc<LogicalUnit>> {
        let n = Lun(lun).number()?;
        self.luns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&n)
            .cloned()
    }

    /// LUN numbers (not raw LUN fields) of all logical units, ascending.
    pub fn luns(&self) -> Vec<u64> {
        self.luns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|&k| k as u64)
            .collect()
    }

    /// Adds a LU at runtime; every nexus gets REPORTED LUNS DATA HAS
    /// CHANGED on the existing LUs (SPC-5 §6.33).
    pub fn add_lun(&self, cfg: LuConfig) -> Result<(), DeviceError> {
        let lu = self.insert(cfg)?;
        let nexuses: Vec<Nexus> = self
            .all()
            .iter()
            .flat_map(|l| l.state().seen.iter().cloned().collect::<Vec<_>>())
            .collect();
        for l in self.all() {
            if Arc::ptr_eq(&l, &lu) {
                continue;
            }
            let mut st = l.state();
            for n in &nexuses {
                st.push_ua(n, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
            }
        }
        Ok(())
    }

    /// Removes a LU at runtime (REPORTED LUNS DATA HAS CHANGED elsewhere).
    pub fn remove_lun(&self, lun: u16) -> Result<(), DeviceError> {
        let removed = self
            .luns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&lun)
            .ok_or(DeviceError::NoSuchLun(lun))?;
        let nexuses: Vec<Nexus> = removed.state().seen.iter().cloned().collect();
        for l in self.all() {
            let mut st = l.state();
            for n in nexuses.iter().chain(st.seen.clone().iter()) {
                st.push_ua(n, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
            }
        }
        Ok(())
    }

    /// Changes the I/O mode; MODE PARAMETERS CHANGED to every nexus.
    pub fn set_mode(&self, lun: u16, mode: IoMode) -> Result<(), DeviceError> {
        let lu = self
            .lu(Lun::from_number(lun).0)
            .ok_or(DeviceError::NoSuchLun(lun))?;
        let mut st = lu.state();
        st.mode = mode;
        st.modes.wce = mode == IoMode::WriteBack;
        st.push_ua_all(Asc::MODE_PARAMETERS_CHANGED, None);
        Ok(())
    }

    /// Resizes the backing store; CAPACITY DATA HAS CHANGED to every nexus.
    pub fn resize(&self, lun: u16, new_size: u64) -> Result<(), DeviceError> {
        let lu = self
            .lu(Lun::from_number(lun).0)
            .ok_or(DeviceError::NoSuchLun(lun))?;
        lu.cfg.backend.resize(new_size)?;
        lu.state().push_ua_all(Asc::CAPACITY_DATA_HAS_CHANGED, None);
        Ok(())
    }

    /// Backend of a LUN (admin API, stats).
    pub fn backend(&self, lun: u16) -> Option<Arc<dyn Backend>> {
        self.lu(Lun::from_number(lun).0)
            .map(|l| l.cfg.backend.clone())
    }

    /// How many Data-Out bytes this CDB wants (0 if invalid, or a command
    /// the addressed LU does not execute).
    pub fn data_out_length(&self, lun: u64, cdb: &[u8]) -> u32 {
        let lu = self.lu(lun);
        let bs = lu.as_ref().map(|l| l.block_size()).unwrap_or(512);
        let parsed = proto::scsi::Command::parse(cdb);
        let parsed = match &lu {
            Some(l) => parsed.and_then(|c| exec::enabled(l, c)),
            None => parsed,
        };
        match parsed {
            Ok(c) => u32::try_from(c.data_out_length(bs)).unwrap_or(u32::MAX),
            Err(_) => 0,
        }
    }

    /// The I_T nexus is gone (logout, connection loss without recovery):
    /// SPC-2 reservations, medium-removal prevention and held copy results
    /// it had are released.
    pub fn nexus_gone(&self, nexus: &Nexus) {
        // Unit attentions and the "seen" mark stay: the same initiator port
        // usually logs straight back in (session reinstatement), possibly
        // before the old session's cleanup reaches us, and must not then
        // see a spurious POWER ON.
        for l in self.all() {
            let mut st = l.state();
            st.res.nexus_lost(nexus);
            st.prevent.remove(nexus);
            // Held EXTENDED COPY results belong to the I_T nexus.
            st.copy_results.retain(|(n, _), _| n != nexus);
        }
    }

    /// LOGICAL UNIT RESET (SAM-5 §7.7): performs the logical unit reset of
    /// SAM-5 §6.3.3 (see [`lu::LuState::reset`]). The I_T nexus that asked
    /// for it gets the reset unit attention like every other nexus.
    pub fn lun_reset(&self, lun: u64, by: &Nexus) {
        if let Some(l) = self.lu(lun) {
            tracing::info!(lun = l.cfg.lun, initiator = %by.initiator_port, "logical unit reset");
            l.state().reset();
        }
    }

    /// TARGET WARM/COLD RESET (RFC 7143 §11.5.1, SAM-5 §6.3.2 hard reset):
    /// every LU is reset as by LOGICAL UNIT RESET (the transport drops the
    /// connections of a cold reset itself).
    pub fn target_reset(&self, by: &Nexus, cold: bool) {
        tracing::info!(initiator = %by.initiator_port, cold, "target reset");
        for l in self.all() {
            l.state().reset();
        }
    }

    /// Executes one command.
    pub async fn execute(&self, nexus: &Nexus, req: ScsiRequest) -> ScsiResult {
        exec::execute(self, nexus, req).await
    }
}
