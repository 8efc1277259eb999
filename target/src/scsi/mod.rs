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
//! LUN masking (access control): the logical unit inventory is per I_T
//! nexus (SPC-5 REPORT LUNS: the inventory "accessible to the I_T nexus").
//! The transport registers the target's access policy with
//! [`DeviceServer::set_access`] ([`LunAccess`]: which LUNs each initiator
//! may address). A LUN an I_T nexus may not access is, for that nexus,
//! exactly a LUN with no logical unit (step 1 above): REPORT LUNS omits it,
//! INQUIRY answers peripheral qualifier 011b, other commands get LOGICAL
//! UNIT NOT SUPPORTED. A policy change raises REPORTED LUNS DATA HAS
//! CHANGED on the I_T nexuses whose inventory changed.
//!
//! Persistent reservations ([`pr`]) persist through a restart (APTPL)
//! when the transport gives the device server a state directory
//! ([`DeviceServer::set_pr_state_dir`]); REGISTER AND MOVE needs the
//! target's relative port identifiers ([`DeviceServer::set_target`]).
//!
//! Not implemented, on purpose: protection information (PI fields are
//! rejected), ACA (NACA = 1 is rejected), ALL_TG_PT and SPEC_I_PT, saved
//! mode pages (SAVING PARAMETERS NOT SUPPORTED), EXTENDED COPY other than
//! LID1 block-to-block between LUs of this target.
//!
//! Opt-in per LU ([`LuConfig`]): SANITIZE (`sanitize`, since one command
//! erases the whole LU) and a removable medium (`removable`).

pub mod control;
mod exec;
pub mod lu;
pub mod pr;
mod transfer;
pub mod xcopy;

pub use lu::{IoMode, LogicalUnit, LuConfig};

use crate::backend::Backend;
use crate::sync::{read_lock, write_lock};
use bytes::Bytes;
use proto::scsi::{Asc, Lun, Sense, Status};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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

impl Nexus {
    /// The nexus names (SAM-5 §4.6.6, RFC 7143 §4.4.2): initiator port
    /// "<initiator name>,i,0x<ISID>", target port "<target name>,t,0x<TPGT>";
    /// the relative target port identifier is the TPGT. Names are case
    /// folded (RFC 7143 §4.2.7.2: iSCSI names are case-insensitive), so one
    /// initiator port is one nexus whatever case it logs in with or a
    /// TransportID names it in.
    pub fn new(initiator: &str, isid: [u8; 6], target: &str, tpgt: u16) -> Self {
        let isid_hex: String = isid.iter().map(|b| format!("{b:02x}")).collect();
        Nexus {
            initiator_port: format!("{},i,0x{isid_hex}", initiator.to_lowercase()),
            target_port: format!("{},t,0x{tpgt:04x}", target.to_lowercase()),
            relative_target_port: tpgt,
        }
    }

    /// The target's iSCSI name: the target port name up to ",t,0x".
    pub fn target_name(&self) -> &str {
        self.target_port
            .rsplit_once(",t,0x")
            .map_or(&self.target_port, |(n, _)| n)
    }

    /// The initiator's iSCSI name: the initiator port name up to its
    /// ",i,0x<ISID>" suffix (RFC 7143 §4.4.2; iSCSI names hold no comma).
    pub fn initiator_name(&self) -> &str {
        self.initiator_port
            .split(',')
            .next()
            .unwrap_or(&self.initiator_port)
    }
}

/// Which logical units each initiator may access (LUN masking, set by the
/// transport from its ACL). The default lets everyone access everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LunAccess {
    /// Initiators absent from `initiators` may access no logical unit
    /// (the target has an ACL and they are not in it).
    pub restricted: bool,
    /// By lower-case initiator name: `None` every LUN, `Some(set)` only
    /// those LUN numbers.
    pub initiators: HashMap<String, Option<BTreeSet<u16>>>,
    /// Lower-case names of the initiators with the control right (they may
    /// SET control-channel switches; see [`control`]).
    pub control: HashSet<String>,
}

impl LunAccess {
    /// Whether `initiator` (any case) may access LUN number `lun`.
    pub fn can_access(&self, initiator: &str, lun: u16) -> bool {
        if !self.restricted && self.initiators.is_empty() {
            return true;
        }
        match self.initiators.get(&initiator.to_ascii_lowercase()) {
            Some(None) => true,
            Some(Some(set)) => set.contains(&lun),
            None => !self.restricted,
        }
    }
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
    /// The saved persistent-reservation state (APTPL) cannot be used.
    #[error(
        "saved persistent reservations of LUN {lun}: {reason}; fix or remove the file to \
         start the LUN without them"
    )]
    PrState { lun: u16, reason: String },
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

/// What the device server knows of the SCSI target device around it.
#[derive(Clone, Debug, Default)]
struct TargetInfo {
    /// The target's name (names the APTPL state files).
    name: Option<String>,
    /// Relative target port identifiers (the TPGTs of its portal groups).
    ports: BTreeSet<u16>,
    /// Where logical units keep their APTPL state; `None`: no APTPL.
    pr_state_dir: Option<std::path::PathBuf>,
}

/// The SCSI target device: a set of logical units.
#[derive(Debug)]
pub struct DeviceServer {
    luns: RwLock<BTreeMap<u16, Arc<LogicalUnit>>>,
    /// LUN masking: which LUs each initiator may access.
    access: RwLock<LunAccess>,
    /// Every initiator has the control right (`iscsi target serve
    /// --control`, a demo and test convenience).
    control_all: std::sync::atomic::AtomicBool,
    target: RwLock<TargetInfo>,
    pub limits: Limits,
}

impl DeviceServer {
    pub fn new(luns: Vec<LuConfig>) -> Result<Arc<Self>, DeviceError> {
        let s = Self {
            luns: RwLock::new(BTreeMap::new()),
            access: RwLock::new(LunAccess::default()),
            control_all: Default::default(),
            target: RwLock::new(TargetInfo::default()),
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
        if self.lu(Lun::from_number(cfg.lun).0).is_some() {
            return Err(DeviceError::LunExists(cfg.lun));
        }
        let lun = cfg.lun;
        let mut lu = LogicalUnit::new(cfg);
        let t = self.target_info();
        if let (Some(dir), Some(name)) = (&t.pr_state_dir, &t.name) {
            lu = lu
                .with_pr_state(dir, name)
                .map_err(|reason| DeviceError::PrState { lun, reason })?;
        }
        let lu = Arc::new(lu);
        let mut m = write_lock(&self.luns);
        if m.contains_key(&lun) {
            return Err(DeviceError::LunExists(lun));
        }
        m.insert(lun, lu.clone());
        Ok(lu)
    }

    fn target_info(&self) -> TargetInfo {
        read_lock(&self.target).clone()
    }

    /// The target around this device server: its name and the relative
    /// target port identifiers (TPGTs) REGISTER AND MOVE may name. Call
    /// again when portal groups change.
    pub fn set_target(&self, name: &str, ports: impl IntoIterator<Item = u16>) {
        let mut t = write_lock(&self.target);
        t.name = Some(name.to_string());
        t.ports = ports.into_iter().collect();
    }

    /// Where logical units added from now on keep their APTPL state (one
    /// file each, see [`pr::persist`]); they restore it when added.
    /// `None` (the default): APTPL = 1 is refused and PTPL_C is 0.
    pub fn set_pr_state_dir(&self, dir: Option<std::path::PathBuf>) {
        write_lock(&self.target).pr_state_dir = dir;
    }

    /// Whether `rtpi` is a relative target port identifier of this target
    /// (without a configured target: only the port `nexus` came through).
    pub(crate) fn has_target_port(&self, rtpi: u16, nexus: &Nexus) -> bool {
        let t = read_lock(&self.target);
        if t.ports.is_empty() {
            rtpi == nexus.relative_target_port
        } else {
            t.ports.contains(&rtpi)
        }
    }

    pub(crate) fn all(&self) -> Vec<Arc<LogicalUnit>> {
        read_lock(&self.luns).values().cloned().collect()
    }

    /// The LU addressed by a raw 8-byte LUN field.
    pub fn lu(&self, lun: u64) -> Option<Arc<LogicalUnit>> {
        let n = Lun(lun).number()?;
        read_lock(&self.luns).get(&n).cloned()
    }

    /// Whether the I_T nexus may access LUN number `lun` (LUN masking).
    pub fn can_access(&self, nexus: &Nexus, lun: u16) -> bool {
        read_lock(&self.access).can_access(nexus.initiator_name(), lun)
    }

    /// The LU addressed by a raw 8-byte LUN field, as `nexus` sees it:
    /// `None` when there is none or the nexus may not access it.
    pub fn lu_for(&self, nexus: &Nexus, lun: u64) -> Option<Arc<LogicalUnit>> {
        self.lu(lun).filter(|l| self.can_access(nexus, l.cfg.lun))
    }

    /// LUN numbers of the logical units `nexus` may access, ascending (its
    /// logical unit inventory).
    pub fn luns_for(&self, nexus: &Nexus) -> Vec<u64> {
        let access = self.access();
        self.luns()
            .into_iter()
            .filter(|&n| access.can_access(nexus.initiator_name(), n as u16))
            .collect()
    }

    /// The current access policy.
    pub fn access(&self) -> LunAccess {
        read_lock(&self.access).clone()
    }

    /// Replaces the access policy (LUN masking). Every I_T nexus whose
    /// logical unit inventory changes gets REPORTED LUNS DATA HAS CHANGED
    /// on the logical units it may access now (SPC-5 §6.33 / SAM-5 §5.14).
    pub fn set_access(&self, access: LunAccess) {
        let lus = self.all();
        let nexuses: HashSet<Nexus> = lus
            .iter()
            .flat_map(|l| l.state().seen.iter().cloned().collect::<Vec<_>>())
            .collect();
        let old = std::mem::replace(&mut *write_lock(&self.access), access.clone());
        let view = |a: &LunAccess, n: &Nexus| -> Vec<u16> {
            lus.iter()
                .map(|l| l.cfg.lun)
                .filter(|&x| a.can_access(n.initiator_name(), x))
                .collect()
        };
        for n in nexuses {
            let now = view(&access, &n);
            if view(&old, &n) == now {
                continue;
            }
            for l in lus.iter().filter(|l| now.contains(&l.cfg.lun)) {
                l.state().push_ua(&n, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
            }
        }
    }

    /// LUN numbers (not raw LUN fields) of all logical units, ascending.
    pub fn luns(&self) -> Vec<u64> {
        read_lock(&self.luns).keys().map(|&k| k as u64).collect()
    }

    /// Adds a LU at runtime; every nexus that may access it gets REPORTED
    /// LUNS DATA HAS CHANGED on the existing LUs it may access (SPC-5
    /// §6.33); a nexus that may not access it sees no change.
    pub fn add_lun(&self, cfg: LuConfig) -> Result<(), DeviceError> {
        let lu = self.insert(cfg)?;
        let access = self.access();
        let nexuses: HashSet<Nexus> = self
            .all()
            .iter()
            .flat_map(|l| l.state().seen.iter().cloned().collect::<Vec<_>>())
            .filter(|n| access.can_access(n.initiator_name(), lu.cfg.lun))
            .collect();
        for l in self.all() {
            if Arc::ptr_eq(&l, &lu) {
                continue;
            }
            let mut st = l.state();
            for n in &nexuses {
                if access.can_access(n.initiator_name(), l.cfg.lun) {
                    st.push_ua(n, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
                }
            }
        }
        Ok(())
    }

    /// Removes a LU at runtime (REPORTED LUNS DATA HAS CHANGED elsewhere).
    pub fn remove_lun(&self, lun: u16) -> Result<(), DeviceError> {
        let removed = write_lock(&self.luns)
            .remove(&lun)
            .ok_or(DeviceError::NoSuchLun(lun))?;
        // Only nexuses that could access the removed LU see a change.
        let access = self.access();
        let nexuses: Vec<Nexus> = removed.state().seen.iter().cloned().collect();
        for l in self.all() {
            let mut st = l.state();
            let told: Vec<Nexus> = nexuses
                .iter()
                .chain(st.seen.iter())
                .filter(|n| {
                    access.can_access(n.initiator_name(), lun)
                        && access.can_access(n.initiator_name(), l.cfg.lun)
                })
                .cloned()
                .collect();
            for n in &told {
                st.push_ua(n, Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
            }
        }
        Ok(())
    }

    /// Changes the I/O mode; MODE PARAMETERS CHANGED to every nexus.
    pub fn set_mode(&self, lun: u16, mode: IoMode) -> Result<(), DeviceError> {
        self.set_mode_by(lun, mode, None)
    }

    /// [`DeviceServer::set_mode`] on behalf of `by` (a control-channel
    /// SET), which gets no unit attention for its own change (SPC-5
    /// §5.14: the other I_T nexuses are told, as for MODE SELECT).
    pub fn set_mode_by(
        &self,
        lun: u16,
        mode: IoMode,
        by: Option<&Nexus>,
    ) -> Result<(), DeviceError> {
        let lu = self
            .lu(Lun::from_number(lun).0)
            .ok_or(DeviceError::NoSuchLun(lun))?;
        let mut st = lu.state();
        st.mode = mode;
        st.modes.wce = mode == IoMode::WriteBack;
        st.push_ua_all(Asc::MODE_PARAMETERS_CHANGED, by);
        Ok(())
    }

    /// Whether `nexus`'s initiator may SET control-channel switches: the
    /// control flag of its ACL entry, or every initiator after
    /// [`DeviceServer::set_control_all`].
    pub fn has_control_right(&self, nexus: &Nexus) -> bool {
        self.control_all() || {
            let name = nexus.initiator_name().to_ascii_lowercase();
            read_lock(&self.access).control.contains(&name)
        }
    }

    /// Grants (or stops granting) the control right to every initiator.
    pub fn set_control_all(&self, on: bool) {
        self.control_all
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn control_all(&self) -> bool {
        self.control_all.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns the control channel of a LU on or off.
    pub fn set_control(&self, lun: u16, on: bool) -> Result<(), DeviceError> {
        let lu = self
            .lu(Lun::from_number(lun).0)
            .ok_or(DeviceError::NoSuchLun(lun))?;
        lu.control.set_enabled(on);
        tracing::info!(lun, on, "control channel switched");
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
        Self::data_out_length_of(self.lu(lun), cdb)
    }

    /// [`DeviceServer::data_out_length`] as `nexus` sees the LUN: for a LU
    /// it may not access, the length for a LUN with no logical unit.
    pub fn data_out_length_for(&self, nexus: &Nexus, lun: u64, cdb: &[u8]) -> u32 {
        Self::data_out_length_of(self.lu_for(nexus, lun), cdb)
    }

    fn data_out_length_of(lu: Option<Arc<LogicalUnit>>, cdb: &[u8]) -> u32 {
        let bs = lu.as_ref().map(|l| l.block_size()).unwrap_or(512);
        if let Some(l) = lu.as_ref().filter(|l| l.control.enabled()) {
            if cdb.first() == Some(&proto::scsi::control::CTL_OPCODE) {
                let n = proto::scsi::control::CtlCommand::param_len(cdb);
                return u32::try_from(n).unwrap_or(0);
            }
            if let Some((_, plain)) = l.control.untag(cdb) {
                return Self::data_out_length_of(lu.clone(), &plain);
            }
        }
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

    /// The Control mode page's D_SENSE of `lun` as `nexus` sees it (false
    /// for a LUN with no logical unit): the sense format the transport
    /// uses for the errors it reports itself.
    pub fn descriptor_sense(&self, nexus: &Nexus, lun: u64) -> bool {
        self.lu_for(nexus, lun)
            .is_some_and(|l| l.state().modes.d_sense)
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
        if let Some(l) = self.lu_for(by, lun) {
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
